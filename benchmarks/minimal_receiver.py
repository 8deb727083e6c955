"""The baseline the receiver is measured against: the least a webhook receiver can do and still
promise what a 200 promises. HMAC-SHA1 check, the body in one fsync'd file (or one S3 PUT), one
INSERT, then 200; no token bucket, no duplicates answer, no group commit, no metrics.

    MINIMAL_SECRET=... DATABASE_URL=... MINIMAL_ARCHIVE=/dir|s3://bucket/prefix \
        gunicorn -w 4 'benchmarks.minimal_receiver:create_app()'
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import uuid

import psycopg
from flask import Flask, request

_local = threading.local()


def create_app() -> Flask:
    app = Flask(__name__)
    secret = os.environ["MINIMAL_SECRET"].encode()
    target = os.environ["MINIMAL_ARCHIVE"]
    database_url = os.environ["DATABASE_URL"]

    def connection() -> psycopg.Connection:
        if getattr(_local, "conn", None) is None:
            _local.conn = psycopg.connect(database_url, autocommit=True)
        return _local.conn

    def store(body: bytes) -> str:
        name = f"{uuid.uuid4().hex}.json"
        if target.startswith("s3://"):
            import boto3

            if getattr(_local, "s3", None) is None:
                _local.s3 = boto3.session.Session().client("s3")
            bucket, _, prefix = target.removeprefix("s3://").partition("/")
            _local.s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)
            return name
        fd = os.open(os.path.join(target, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        return name

    @app.post("/webhooks/segment/<connection_id>")
    def receive(connection_id: str):
        body = request.get_data()
        expected = hmac.new(secret, body, hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Signature", "").lower()):
            return {"error": "bad signature"}, 401
        key = store(body)
        connection().execute(
            "insert into minimal_events (connection_id, archive_key, payload) values (%s, %s, %s::jsonb)",
            (connection_id, key, body.decode()),
        )
        return {"accepted": 1}

    return app


SCHEMA = "create table if not exists minimal_events (connection_id text, archive_key text, payload jsonb)"
