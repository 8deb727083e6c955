"""Shared fixtures: a real embedded PostgreSQL, fresh databases, file and S3 archives, the receiver.

Every test gets its own database cloned from a template that already has the schema, so
tests are isolated and fast. Nothing is mocked: the receiver runs under gunicorn, S3 is
moto's server speaking the real protocol over HTTP.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest
from cryptography.fernet import Fernet

from segment_elt.control import schema
from segment_elt.local import embedded
from tests.helpers import MotoS3, free_port, start_receiver

TEMPLATE = "segment_elt_template"


class PgServer:
    """The session's embedded PostgreSQL under a temporary directory."""

    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()  # never the default port, so a developer's `make up` keeps it

    def url(self, database: str = "postgres") -> str:
        return embedded.url(self.base, database)

    def start(self) -> None:
        embedded.start(self.base, server_port=self.port)

    def stop(self, mode: str = "fast") -> None:
        embedded.stop(self.base, mode)

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'create database "{name}" template "{TEMPLATE}"')
        return self.url(name)


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory):
    """Keys and local dirs of the session; nothing touches the developer's .local/."""
    local = tmp_path_factory.mktemp("local")
    saved = dict(os.environ)
    os.environ.update(
        SEGMENT_ELT_LOCAL_DIR=str(local),
        SEGMENT_ELT_FERNET_KEY=Fernet.generate_key().decode(),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        DO_NOT_TRACK="1",
    )
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("ARCHIVE_URL", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> PgServer:
    server = PgServer(tmp_path_factory.mktemp("pg"))
    server.start()
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'create database "{TEMPLATE}"')
    with psycopg.connect(server.url(TEMPLATE), autocommit=True) as conn:
        schema.upgrade(conn)
    yield server
    server.stop("immediate")


@pytest.fixture
def database_url(pg_server, monkeypatch) -> str:
    """A fresh database with the schema at the latest version; also exported as DATABASE_URL."""
    url = pg_server.create_database()
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.fixture
def db(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def archive_url(tmp_path, monkeypatch) -> str:
    """A file:// archive in a fresh directory; also exported as ARCHIVE_URL."""
    url = (tmp_path / "archive").as_uri()
    monkeypatch.setenv("ARCHIVE_URL", url)
    return url


@pytest.fixture(scope="session")
def moto_s3() -> MotoS3:
    server = MotoS3(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_archive_url(moto_s3, monkeypatch) -> str:
    """An s3:// archive in a fresh bucket on moto's server; AWS_ENDPOINT_URL points at it."""
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    boto3.client("s3", endpoint_url=moto_s3.endpoint).create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/raw"
    monkeypatch.setenv("ARCHIVE_URL", url)
    return url


@pytest.fixture
def receiver_factory(tmp_path):
    """Start receivers under gunicorn with the test's environment: factory(workers=2, env={})."""
    started = []

    def factory(workers: int = 2, env: dict | None = None):
        keys = ("DATABASE_URL", "ARCHIVE_URL", "AWS_ENDPOINT_URL", "SEGMENT_ELT_FERNET_KEY", "SEGMENT_ELT_LOCAL_DIR")
        base = {k: os.environ[k] for k in keys if k in os.environ}
        receiver = start_receiver({**base, **(env or {})}, tmp_path, workers)
        started.append(receiver)
        return receiver

    yield factory
    for receiver in started:
        receiver.stop()
