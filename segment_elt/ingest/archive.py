"""The raw archive: the exact body of every accepted request, with its receive time.

ARCHIVE_URL is `s3://bucket/prefix` (boto3; honours AWS_ENDPOINT_URL) or `file:///absolute/dir`;
keys and objects are laid out as docs/receiver.md#archive-key-layout says (one object per group
of requests committed together; requests_in reads every object ever written):

    <prefix>/org=<org>/connection=<id>/dt=<YYYY-MM-DD>/hour=<HH>/<received-at ms>-<sha256[:16]>.json
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)


class ArchiveUnavailable(RuntimeError):
    """The archive could not be written or read (the receiver answers 503)."""


class ArchiveCorrupt(ValueError):
    """An object's bytes do not match the body digest its key names (truncated or altered)."""


def object_key(prefix: str, org_id: str, connection_id: str, received_at: dt.datetime, body: bytes) -> str:
    at = received_at.astimezone(dt.UTC)
    ms = int(at.timestamp() * 1000)
    name = f"{ms}-{hashlib.sha256(body).hexdigest()[:16]}.json"
    parts = [f"org={org_id}", f"connection={connection_id}", f"dt={at:%Y-%m-%d}", f"hour={at:%H}", name]
    return "/".join([prefix, *parts] if prefix else parts)


GROUP_MARK = b'{"segment_elt_group":1,'


def group_object(requests: list[tuple[dt.datetime, str]]) -> bytes:
    """The archive object of a group: its requests' receive times and exact bodies, in order.

        {"segment_elt_group":1,"requests":[{"received_at":"2026-12-02T04:31:07.123456+00:00","body":"..."}, ...]}

    `body` is the request body as a JSON string: request bodies are UTF-8, so encoding the string
    as UTF-8 gives back the exact bytes received.
    """
    parts = (
        json.dumps({"received_at": at.isoformat(timespec="microseconds"), "body": text}, ensure_ascii=False)
        for at, text in requests
    )
    return GROUP_MARK + b'"requests":[' + ",".join(parts).encode() + b"]}"


def requests_in(key: str, body: bytes) -> list[tuple[dt.datetime, bytes]]:
    """(received at, exact body) of each request an archive object holds, in either layout."""
    if not body.startswith(GROUP_MARK):
        return [(received_at_of(key), body)]
    try:
        return [(dt.datetime.fromisoformat(r["received_at"]), r["body"].encode()) for r in json.loads(body)["requests"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArchiveCorrupt(f"not a readable group object: {exc}") from None


def day_prefix(prefix: str, org_id: str, connection_id: str, day: dt.date) -> str:
    parts = [f"org={org_id}", f"connection={connection_id}", f"dt={day:%Y-%m-%d}/"]
    return "/".join([prefix, *parts] if prefix else parts)


def received_at_of(key: str) -> dt.datetime:
    """The receive time encoded in an object key's file name."""
    ms = int(key.rsplit("/", 1)[-1].split("-", 1)[0])
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def body_digest_of(key: str) -> str:
    """The body digest (sha256, first 16 hex) encoded in an object key's file name."""
    return key.rsplit("/", 1)[-1].split("-", 1)[1].removesuffix(".json")


def verify_body(key: str, body: bytes) -> None:
    """Raise ArchiveCorrupt unless `body` is the exact body the key was made for."""
    digest = hashlib.sha256(body).hexdigest()[:16]
    if digest != body_digest_of(key):
        raise ArchiveCorrupt(
            f"{len(body)} bytes whose sha256 starts {digest}, not {body_digest_of(key)} as its key "
            "names (truncated or altered)"
        )


class Archive(Protocol):
    url: str
    prefix: str

    def put(self, key: str, body: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_many(self, keys: builtins.list[str]) -> None: ...
    def list(self, key_prefix: str) -> Iterator[str]: ...
    def audit(self, keys: builtins.list[str]) -> dict[str, str]: ...  # `list` is the method above
    def remove_stale_temp_files(self, older_than: dt.timedelta) -> int: ...
    def check(self) -> None: ...


SAMPLE_PER_BATCH = 10
AUDIT_CALLS_AT_ONCE = 16  # S3 calls of an audit in flight together (the client's pool holds 32)


TEMP_SUFFIX = ".tmp"


def _write_all(fd: int, body: bytes) -> None:
    """os.write may write fewer bytes than asked (a nearly full disk): loop until all are written."""
    view = memoryview(body)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, "no space left on device")
        view = view[written:]


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
        """Write all of `body`, read it back against the key's digest, then publish it under `key`.

        A full disk makes os.write return short (or fail): the object is then never published
        and its temporary file is removed, so a failed put leaves nothing behind.
        """
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:
            if path.parent not in self._made:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(path.parent)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                _write_all(fd, body)
                os.fsync(fd)
                verify_body(key, os.pread(fd, len(body) + 1, 0))
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except (OSError, ArchiveCorrupt) as exc:
            self._made.discard(path.parent)
            tmp.unlink(missing_ok=True)
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ArchiveUnavailable(f"cannot write {path}: {reason}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot read {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object durably (fsync of its directory); a missing one is no error."""
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot delete {path}: {exc.strerror}") from exc

    def delete_many(self, keys: list[str]) -> None:
        """delete, for each key."""
        for key in keys:
            self.delete(key)

    def audit(self, keys: list[str]) -> dict[str, str]:
        """key -> what is wrong with its object, for each key whose object is missing or corrupt.

        Local reads are cheap, so every object is read back and checked against its key's digest.
        """
        problems = {}
        for key in keys:
            try:
                verify_body(key, self._path(key).read_bytes())
            except FileNotFoundError:
                problems[key] = "missing"
            except OSError as exc:
                problems[key] = f"unreadable: {exc.strerror}"
            except ArchiveCorrupt as exc:
                problems[key] = f"corrupt: {exc}"
        return problems

    def remove_stale_temp_files(self, older_than: dt.timedelta) -> int:
        """Delete temporary files a killed writer left (a live put finishes within seconds)."""
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for path in self.root.rglob(f".*{TEMP_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

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
        self._client: Any = None
        self._pid: int | None = None
        self._making = threading.Lock()

    @property
    def client(self):
        # One client per process: a client must not cross gunicorn's fork. Making one takes
        # ~0.5 s, so the receiver's threads make it once, together.
        with self._making:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = self._new_client(), os.getpid()
        return self._client

    def _new_client(self):
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=self._timeout_s,
            read_timeout=self._timeout_s,
            retries={"total_max_attempts": 1},  # Segment retries a 503; answer fast instead
            max_pool_connections=32,
        )
        return boto3.session.Session().client("s3", config=config)

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveUnavailable(
                f"S3 {what} s3://{self.bucket}/{kwargs.get('Key', kwargs.get('Prefix', ''))} failed: {exc}"
            ) from exc

    def put(self, key: str, body: bytes) -> None:
        """PUT with Content-MD5 and a SHA-256 checksum, which S3 verifies before storing; then check
        that the ETag S3 answers is the MD5 of our bytes (for plain and SSE-S3 objects it is), so a
        server or proxy that stored other bytes is caught too. A mismatched object is deleted."""
        from botocore.exceptions import BotoCoreError, ClientError

        md5 = hashlib.md5(body)
        answer = self._call(
            "put",
            self.client.put_object,
            Key=key,
            Body=body,
            ContentType="application/json",
            ContentMD5=base64.b64encode(md5.digest()).decode(),
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
        )
        etag = answer.get("ETag", "").strip('"')
        if _is_md5(etag) and etag != md5.hexdigest():
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (BotoCoreError, ClientError):  # unusable either way: replay and prune check digests
                log.warning("could not delete the mismatched object s3://%s/%s", self.bucket, key)
            raise ArchiveUnavailable(
                f"S3 put s3://{self.bucket}/{key} stored other bytes than sent "
                f"(ETag {etag}, expected {md5.hexdigest()}); retry"
            )

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

    def delete(self, key: str) -> None:
        """DELETE the object (its current version: see docs/privacy.md on bucket versioning)."""
        self._call("delete", self.client.delete_object, Key=key)

    def delete_many(self, keys: list[str]) -> None:
        """DELETE the objects, up to 1,000 in one request (DeleteObjects); a missing one is no error."""
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            answer = self._call(
                "delete", self.client.delete_objects, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise ArchiveUnavailable(
                    f"S3 delete of {len(answer['Errors'])} objects failed, e.g. s3://{self.bucket}/{first.get('Key')}:"
                    f" {first.get('Code')} {first.get('Message')}"
                )

    def audit(self, keys: list[str]) -> dict[str, str]:
        """key -> what is wrong with its object, for each key whose object is missing or corrupt.

        Existence of every object comes from listing their hour prefixes (a request per 1,000
        objects); a random sample of SAMPLE_PER_BATCH objects is read back against its key's
        digest, and when one of them is corrupt, all are. The listings and the reads each go out
        AUDIT_CALLS_AT_ONCE at a time: at tens of ms per S3 call, one after the other they would
        bound a day's retention.
        """
        with ThreadPoolExecutor(AUDIT_CALLS_AT_ONCE) as pool:
            listed: set[str] = set()
            hour_prefixes = sorted({key.rsplit("/", 1)[0] + "/" for key in keys})
            for found_keys in pool.map(lambda prefix: list(self.list(prefix)), hour_prefixes):
                listed.update(found_keys)
            problems = {key: "missing" for key in keys if key not in listed}
            present = [key for key in keys if key in listed]
            sample = random.sample(present, min(SAMPLE_PER_BATCH, len(present)))
            for keys_to_read in (sample, present):
                found = dict(problem for problem in pool.map(self._corruption, keys_to_read) if problem)
                problems.update(found)
                if not found:
                    break
        return problems

    def _corruption(self, key: str) -> tuple[str, str] | None:
        try:
            verify_body(key, self.get(key))
        except ArchiveCorrupt as exc:
            return key, f"corrupt: {exc}"
        return None

    def list(self, key_prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")

        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key_prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveUnavailable(f"S3 list s3://{self.bucket}/{key_prefix} failed: {exc}") from exc

    def remove_stale_temp_files(self, older_than: dt.timedelta) -> int:
        """Nothing to remove: an S3 PUT is atomic and leaves no temporary object."""
        return 0

    def check(self) -> None:
        self._call("head-bucket", self.client.head_bucket)


def _is_md5(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)


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
