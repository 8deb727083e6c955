"""The raw archive: the exact body of every accepted request, one object per request.

ARCHIVE_URL is `s3://bucket/prefix` (boto3; honours AWS_ENDPOINT_URL for S3-compatible
servers) or `file:///absolute/dir`. Keys follow CONTRACT section 3 so a date range can be
listed and replayed:

    <prefix>/org=<org>/connection=<id>/dt=<YYYY-MM-DD>/hour=<HH>/<received-at ms>-<sha256[:16]>.json
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import unquote, urlparse


class ArchiveUnavailable(RuntimeError):
    """The archive could not be written or read (the receiver answers 503)."""


def object_key(prefix: str, org_id: str, connection_id: str, received_at: dt.datetime, body: bytes) -> str:
    at = received_at.astimezone(dt.timezone.utc)
    ms = int(at.timestamp() * 1000)
    name = f"{ms}-{hashlib.sha256(body).hexdigest()[:16]}.json"
    parts = [f"org={org_id}", f"connection={connection_id}", f"dt={at:%Y-%m-%d}", f"hour={at:%H}", name]
    return "/".join([prefix, *parts] if prefix else parts)


def day_prefix(prefix: str, org_id: str, connection_id: str, day: dt.date) -> str:
    parts = [f"org={org_id}", f"connection={connection_id}", f"dt={day:%Y-%m-%d}/"]
    return "/".join([prefix, *parts] if prefix else parts)


def received_at_of(key: str) -> dt.datetime:
    """The receive time encoded in an object key's file name."""
    ms = int(key.rsplit("/", 1)[-1].split("-", 1)[0])
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


class Archive(Protocol):
    url: str
    prefix: str

    def put(self, key: str, body: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, key_prefix: str) -> Iterator[str]: ...
    def check(self) -> None: ...


class FileArchive:
    """Objects as files under a directory; each put is durable (fsync of file and directory)."""

    def __init__(self, url: str, root: Path):
        self.url, self.root, self.prefix = url, root.resolve(), ""
        self._made: set[Path] = set()

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"archive key escapes the archive root: {key!r}")
        return self.root / key

    def put(self, key: str, body: bytes) -> None:
        path = self._path(key)
        try:
            if path.parent not in self._made:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(path.parent)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self._made.discard(path.parent)
            raise ArchiveUnavailable(f"cannot write {path}: {exc.strerror}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot read {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, key_prefix: str) -> Iterator[str]:
        base = self._path(key_prefix.rstrip("/"))
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*.json")):
            yield path.relative_to(self.root).as_posix()

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise ArchiveUnavailable(f"archive directory {self.root} is missing or not writable")


class S3Archive:
    """Objects in an S3 bucket (or any S3-compatible server through AWS_ENDPOINT_URL)."""

    def __init__(self, url: str, bucket: str, prefix: str, timeout_s: float):
        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self._timeout_s = timeout_s
        self._client = None
        self._pid = None

    @property
    def client(self):
        # One client per process: a client must not cross gunicorn's fork.
        if self._client is None or self._pid != os.getpid():
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=self._timeout_s,
                read_timeout=self._timeout_s,
                retries={"total_max_attempts": 1},  # Segment retries a 503; answer fast instead
                max_pool_connections=32,
            )
            self._client, self._pid = boto3.session.Session().client("s3", config=config), os.getpid()
        return self._client

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveUnavailable(f"S3 {what} s3://{self.bucket}/{kwargs.get('Key', kwargs.get('Prefix', ''))} failed: {exc}") from exc

    def put(self, key: str, body: bytes) -> None:
        self._call("put", self.client.put_object, Key=key, Body=body, ContentType="application/json")

    def get(self, key: str) -> bytes:
        return self._call("get", self.client.get_object, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise ArchiveUnavailable(f"S3 head s3://{self.bucket}/{key} failed: {exc}") from exc

    def list(self, key_prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")

        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key_prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveUnavailable(f"S3 list s3://{self.bucket}/{key_prefix} failed: {exc}") from exc

    def check(self) -> None:
        self._call("head-bucket", self.client.head_bucket)


def open_archive(url: str, timeout_s: float = 3.0) -> Archive:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        root = Path(unquote(parsed.path))
        if not root.is_absolute():
            raise ValueError(f"ARCHIVE_URL {url!r}: a file:// archive needs an absolute path")
        root.mkdir(parents=True, exist_ok=True)
        return FileArchive(url, root)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"ARCHIVE_URL {url!r}: an s3:// archive needs a bucket (s3://bucket/prefix)")
        return S3Archive(url, parsed.netloc, parsed.path, timeout_s)
    raise ValueError(f"ARCHIVE_URL {url!r}: use s3://bucket/prefix or file:///absolute/dir")
