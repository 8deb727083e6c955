"""Running the dbt project (dbt_project/) in-process, with its connection taken from DATABASE_URL."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from segment_elt.config import PROJECT_ROOT, database_url

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


class DbtFailed(RuntimeError):
    """dbt finished with errors or failing tests."""


def dbt_env(url: str | None = None) -> dict[str, str]:
    """The environment variables dbt_project/profiles.yml reads, derived from a libpq URL."""
    parsed = urlparse(url or database_url())
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or "localhost"])[0]
    return {
        "SEGMENT_ELT_DBT_HOST": host,
        "SEGMENT_ELT_DBT_PORT": str(query.get("port", [parsed.port or 5432])[0]),
        "SEGMENT_ELT_DBT_USER": unquote(parsed.username or query.get("user", ["postgres"])[0]),
        "SEGMENT_ELT_DBT_PASSWORD": unquote(parsed.password or query.get("password", [""])[0]),
        "SEGMENT_ELT_DBT_DBNAME": (parsed.path or "/postgres").lstrip("/") or "postgres",
        "PGTZ": "UTC",
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


@contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_dbt(args: list[str], url: str | None = None, project_dir: Path = DBT_PROJECT_DIR):
    """Run `dbt <args>` against DATABASE_URL (or `url`); raises DbtFailed unless it succeeds."""
    from dbt.cli.main import dbtRunner

    full = [*args, "--project-dir", str(project_dir), "--profiles-dir", str(project_dir)]
    with _environ(dbt_env(url)):
        result = dbtRunner().invoke(full)
    if not result.success:
        detail = result.exception or _failures(result.result)
        raise DbtFailed(f"dbt {' '.join(args)} failed: {detail}")
    return result.result


def _failures(results) -> str:
    try:
        bad = [f"{r.node.name}: {r.message}" for r in results if str(r.status) in {"error", "fail"}]
    except TypeError:
        return "see the dbt log"
    return "; ".join(bad) or "see the dbt log"
