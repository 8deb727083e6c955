"""The receiver beside the minimal receiver (benchmarks/minimal_receiver.py), in one run on the same
PostgreSQL, gunicorn and load generator (wrk, 32 connections):

- file archive: single-event requests/s of each, and their ratio;
- S3 stand-in answering every PUT after 40 ms (tests/s3_stand_in.py): single-event requests/s at
  saturation with the PUTs it took, p50/p99 at a fixed 200 requests/s, and 100-event arrays;
- moto's S3 server (the real protocol): single-event requests/s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import boto3

from benchmarks.bench_receiver import _bodies, _wrk, fixed_rate
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, schema
from segment_elt.local import embedded
from tests.helpers import ROOT, VENV_BIN, MotoS3, free_port, start_receiver, wait_http
from tests.s3_stand_in import SlowS3

SECONDS = int(os.environ.get("BENCH_SECONDS", 10))
PUT_DELAY_MS = 40
FERNET_KEY = "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI="
WORKERS = int(os.environ.get("RECEIVER_WORKERS", 4))


@contextmanager
def database():
    tmp = Path(tempfile.mkdtemp(prefix="bench-group-"))
    try:
        url = embedded.start(tmp / "pg", server_port=embedded.free_port())
        with db.connect(url) as conn:
            schema.upgrade(conn)
        yield url, tmp
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def receiver(database_url: str, tmp: Path, archive_env: dict):
    """The project's receiver with its production settings; yields (webhook url, secret)."""
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", FERNET_KEY)
    env = {"DATABASE_URL": database_url, "SEGMENT_ELT_FERNET_KEY": os.environ["SEGMENT_ELT_FERNET_KEY"], **archive_env}
    with db.connect(database_url) as conn:
        created = connections.create(conn, "bench", rate_limit=1_000_000_000)
    started = start_receiver(env, tmp, workers=WORKERS)
    try:
        yield started.webhook(created.connection_id), created.secret
    finally:
        started.stop()


@contextmanager
def minimal(database_url: str, tmp: Path, archive: str, extra_env: dict | None = None):
    """The minimal receiver under the same gunicorn; yields (webhook url, secret)."""
    with db.connect(database_url) as conn:
        conn.execute("create table if not exists minimal_events (connection_id text, archive_key text, payload jsonb)")
    port, secret = free_port(), "minimal-secret"
    env = {**os.environ, **(extra_env or {}), "DATABASE_URL": database_url, "MINIMAL_SECRET": secret,
           "MINIMAL_ARCHIVE": archive}
    proc = subprocess.Popen([str(VENV_BIN / "gunicorn"), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "-k", "sync",
                             "--log-level", "warning", "benchmarks.minimal_receiver:create_app()"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "minimal.log").open("wb"))
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc=proc)
        yield f"http://127.0.0.1:{port}/webhooks/segment/bench", secret
    finally:
        proc.terminate()
        proc.wait(15)


def single_events(url: str, secret: str, connections: int = 32) -> float:
    return _wrk(url, _bodies(secret, 3000, 1), SECONDS, connections)


def run() -> list[Figure]:
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    figures = []
    with database() as (url, tmp):
        archive_dir = tmp / "archive"
        minimal_dir = tmp / "minimal"
        minimal_dir.mkdir()
        with minimal(url, tmp, str(minimal_dir)) as (hook, secret):
            baseline = single_events(hook, secret)
        with receiver(url, tmp, {"ARCHIVE_URL": archive_dir.as_uri()}) as (hook, secret):
            ours = single_events(hook, secret)
        figures += [
            Figure("minimal receiver, single events (file)", baseline, "req/s"),
            Figure("receiver, single events (file archive)", ours, "req/s"),
            Figure("receiver / minimal, single events (file)", ours / baseline, "x", ">= 1.5x", ours / baseline >= 1.5),
        ]

        stand_in = SlowS3(free_port(), PUT_DELAY_MS / 1000).start()
        s3_env = {"ARCHIVE_URL": "s3://bench/raw", "AWS_ENDPOINT_URL": stand_in.endpoint}
        try:
            with minimal(url, tmp, "s3://bench/minimal", s3_env) as (hook, secret):
                baseline_s3 = single_events(hook, secret)
            with receiver(url, tmp, s3_env) as (hook, secret):
                p50, p99 = fixed_rate(hook, secret, rate=200, seconds=SECONDS)
                before = stand_in.puts
                bodies = _bodies(secret, 3000, 1)
                served, requests = _wrk_counted(hook, bodies)
                puts = stand_in.puts - before
                arrays = _wrk(hook, _bodies(secret, 400, 100), SECONDS) * 100
        finally:
            stand_in.shutdown()
        figures += [
            Figure(f"minimal receiver, single events (S3 +{PUT_DELAY_MS} ms)", baseline_s3, "req/s"),
            Figure(f"receiver, single events (S3 +{PUT_DELAY_MS} ms)", served, "req/s", ">= 2,000 req/s", served >= 2000),
            Figure(f"receiver, requests per PUT at saturation (S3 +{PUT_DELAY_MS} ms)", requests / max(puts, 1),
                   "requests", ">= 20", requests / max(puts, 1) >= 20),
            Figure(f"receiver p50 at 200 req/s (S3 +{PUT_DELAY_MS} ms)", p50, "ms", "<= 60 ms", p50 <= 60),
            Figure(f"receiver p99 at 200 req/s (S3 +{PUT_DELAY_MS} ms)", p99, "ms", "<= 200 ms", p99 <= 200),
            Figure(f"receiver, 100-event arrays (S3 +{PUT_DELAY_MS} ms)", arrays, "events/s", ">= 40,000 events/s",
                   arrays >= 40000),
        ]

        moto = MotoS3(free_port())
        moto.start()
        try:
            boto3.client("s3", endpoint_url=moto.endpoint).create_bucket(Bucket="bench")
            with receiver(url, tmp, {"ARCHIVE_URL": "s3://bench/raw", "AWS_ENDPOINT_URL": moto.endpoint}) as (hook, secret):
                on_moto = single_events(hook, secret)
        finally:
            moto.stop()
        figures.append(Figure("receiver, single events (moto S3 server)", on_moto, "req/s"))
    return figures


def _wrk_counted(url: str, bodies) -> tuple[float, int]:
    """Accepted requests/s and the number of requests wrk completed."""
    rate = _wrk(url, bodies, SECONDS)
    return rate, int(rate * SECONDS)
