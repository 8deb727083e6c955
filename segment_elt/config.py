"""Configuration from the environment, in one place (CONTRACT section 2).

Every setting has an embedded default under `.local/` of the project root, so that
`make demo` and `make up` need nothing but Python; pointing DATABASE_URL and ARCHIVE_URL at
a real PostgreSQL and a real S3 bucket switches to them with no code change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def local_dir() -> Path:
    """Where the embedded defaults live (`.local/` unless SEGMENT_ELT_LOCAL_DIR says otherwise)."""
    return Path(os.environ.get("SEGMENT_ELT_LOCAL_DIR", PROJECT_ROOT / ".local")).resolve()


def database_url() -> str:
    """DATABASE_URL, else the embedded server that `python -m segment_elt.embedded start` runs."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from segment_elt import embedded

    return embedded.url(local_dir() / "pg")


def archive_url() -> str:
    return os.environ.get("ARCHIVE_URL") or (local_dir() / "archive").as_uri()


def public_base_url() -> str:
    return os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8080").rstrip("/")


SEGMENT_API_BASES = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}


def segment_api_url(region: str) -> str:
    """Base of Segment's HTTP Tracking API for a region, or the SEGMENT_API_URL override."""
    override = os.environ.get("SEGMENT_API_URL")
    if override:
        return override.rstrip("/")
    return SEGMENT_API_BASES[region]


@dataclass(frozen=True)
class ReceiverSettings:
    """Knobs of the receiver; each has an environment variable."""

    max_body_bytes: int = int(os.environ.get("SEGMENT_ELT_MAX_BODY_BYTES", 16 * 1024 * 1024))
    # Each backend call must fail fast enough that the answer beats Segment's 10 s timeout.
    db_timeout_s: float = float(os.environ.get("SEGMENT_ELT_DB_TIMEOUT_S", 3))
    archive_timeout_s: float = float(os.environ.get("SEGMENT_ELT_ARCHIVE_TIMEOUT_S", 3))
    retry_after_s: int = int(os.environ.get("SEGMENT_ELT_RETRY_AFTER_S", 5))


DEFAULT_RATE_LIMIT_PER_MINUTE = 600
DEFAULT_RETENTION_DAYS = int(os.environ.get("SEGMENT_ELT_RETENTION_DAYS", 30))
