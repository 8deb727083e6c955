"""GET /healthz (the process is alive) and GET /readyz (database and archive reachable)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from segment_elt.ingest.archive import ArchiveUnavailable
from segment_elt.ingest.receiver.backends import DatabaseUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    backends = current_app.extensions["segment_elt"]
    problems = {}
    try:
        backends.run(lambda c: c.execute("select 1").fetchone())
    except DatabaseUnavailable as exc:
        problems["database"] = str(exc)
    try:
        backends.archive.check()
    except ArchiveUnavailable as exc:
        problems["archive"] = str(exc)
    if problems:
        response = jsonify(status="unavailable", **problems)
        response.headers["Retry-After"] = str(backends.settings.retry_after_s)
        return response, 503
    return jsonify(status="ok")
