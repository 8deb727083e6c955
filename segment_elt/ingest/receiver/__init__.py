"""The webhook receiver: verifies Segment's signed requests and lands them (docs/receiver.md).

    gunicorn -c receiver/gunicorn.conf.py    # serves receiver:create_asgi_app() (asgi.py)

create_app() is the Flask app: every route, and what the ASGI app runs in threads.
"""

from __future__ import annotations

import json
import logging
import sys

from flask import Flask, jsonify, request

from segment_elt.settings import settings as read_settings


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    settings = read_settings()
    app.config.update(
        DATABASE_URL=settings.require_database_url(),
        ARCHIVE_URL=settings.archive_url,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SETTINGS=settings,
    )
    if test_config:
        app.config.update(test_config)
    _configure_logging()

    from segment_elt.ingest.receiver import health, metrics, tracking, webhook
    from segment_elt.ingest.receiver.backends import Backends
    from segment_elt.ingest.receiver.groups import GroupCommitter
    from segment_elt.ingest.receiver.rejects import RejectsLog
    from segment_elt.ingest.receiver.state import EXTENSION, ReceiverState

    backends = Backends(app.config["DATABASE_URL"], app.config["ARCHIVE_URL"], settings)
    rejects = RejectsLog(backends)
    app.extensions[EXTENSION] = ReceiverState(backends, GroupCommitter(backends, rejects), rejects)
    app.register_blueprint(webhook.bp)
    app.register_blueprint(tracking.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)

    @app.errorhandler(404)
    def not_found(_):
        if request.path.startswith("/v1/"):
            return tracking.unknown_path(request.path)
        return jsonify(error="not found: POST events to /webhooks/segment/<connection_id>"), 404

    @app.errorhandler(405)
    def method_not_allowed(_):
        if request.path.startswith("/v1/"):
            return tracking.error(405, "method not allowed: POST events to the tracking API")
        return jsonify(error="method not allowed: POST events to /webhooks/segment/<connection_id>"), 405

    @app.errorhandler(413)
    def too_large(_):
        limit = app.config["MAX_CONTENT_LENGTH"]
        return jsonify(error=f"body larger than {limit} bytes: send smaller batches"), 413

    @app.errorhandler(Exception)
    def unexpected(exc):
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return jsonify(error=exc.description or exc.name), exc.code
        logging.getLogger("receiver").exception("unexpected error")
        response = jsonify(error=webhook.UNEXPECTED)
        response.headers["Retry-After"] = str(settings.retry_after_s)
        return response, 503

    return app


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = repr(record.exc_info[1])
        return json.dumps(line, separators=(",", ":"))


def _configure_logging() -> None:
    logger = logging.getLogger("receiver")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
