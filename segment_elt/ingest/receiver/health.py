"""GET /healthz (the process is alive) and GET /readyz (database and archive reachable, and every
stored secret readable with the configured Fernet keys)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from segment_elt.control import crypto, keys
from segment_elt.ingest.archive import ArchiveUnavailable
from segment_elt.ingest.receiver.backends import DatabaseUnavailable
from segment_elt.ingest.receiver.state import receiver_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    backends = receiver_state().backends
    problems = {}
    try:
        unreadable = backends.run(keys.unreadable)
    except DatabaseUnavailable as exc:
        problems["database"] = str(exc)
    except crypto.SecretKeyError as exc:  # a malformed SEGMENT_ELT_FERNET_KEY
        problems["secrets"] = str(exc)
    else:
        if unreadable:
            shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
            problems["secrets"] = f"{crypto.UNDECRYPTABLE}: {shown}"
    try:
        backends.archive.check()
    except ArchiveUnavailable as exc:
        problems["archive"] = str(exc)
    if problems:
        response = jsonify(status="unavailable", **problems)
        response.headers["Retry-After"] = str(backends.settings.retry_after_s)
        return response, 503
    return jsonify(status="ok")
