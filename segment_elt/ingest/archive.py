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
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ObjectDigest:
    """What an archive object was when written: its size in bytes and its MD5, which an S3 listing
    shows as Size and, for a single-part PUT without SSE-KMS or SSE-C, as ETag. `md5` is None
    where S3 answered the PUT with an ETag that is not the MD5 (the audit then reads a sample)."""

    size: int
    md5: bytes | None

    @classmethod
    def of(cls, body: bytes) -> ObjectDigest:
        return cls(len(body), hashlib.md5(body).digest())


class Archive(Protocol):
    url: str
    prefix: str

    def put(self, key: str, body: bytes) -> ObjectDigest: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_many(self, keys: builtins.list[str]) -> None: ...
    def list(self, key_prefix: str) -> Iterator[str]: ...
    def audit(  # `list` is the method above
        self,
        keys: builtins.list[str],
        recorded: Mapping[str, ObjectDigest] | None = None,
        checked_by: Counter[str] | None = None,
    ) -> dict[str, str]: ...
    def remove_stale_temp_files(self, older_than: dt.timedelta) -> int: ...
    def check(self) -> None: ...


SAMPLE_PER_THOUSAND = 10  # objects read back per 1,000 that no recorded digest vouches for
AUDIT_CALLS_AT_ONCE = 16  # S3 calls of an audit in flight together (the client's pool holds 32)
LIST_PAGE = 1000  # keys per ListObjectsV2 page (S3's maximum)

# How an audit checked each object that exists (the `checked_by` counts, Pruned.audited)
BY_RECORD = "size and MD5 as recorded"
BY_SIZE_AND_SAMPLE = "size as recorded, bytes by a read-back sample (ETag not an MD5)"
BY_SAMPLE = "read-back sample (no recorded digest)"
BY_KEY_DIGEST = "read back against the key's digest (no recorded digest)"


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

    def put(self, key: str, body: bytes) -> ObjectDigest:
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
        return ObjectDigest.of(body)

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

    def audit(
        self,
        keys: list[str],
        recorded: Mapping[str, ObjectDigest] | None = None,
        checked_by: Counter[str] | None = None,
    ) -> dict[str, str]:
        """key -> what is wrong with its object, for each key whose object is missing or not as written.

        Local reads are cheap, so every object is read back: compared with its recorded size and MD5
        ("wrong size", "wrong digest"), or, with none recorded, with its key's digest ("corrupt").
        `checked_by`, when given, counts the objects found by how they were checked.
        """
        recorded = recorded or {}
        checked_by = Counter() if checked_by is None else checked_by
        problems = {}
        for key in keys:
            try:
                body = self._path(key).read_bytes()
            except FileNotFoundError:
                problems[key] = "missing"
                continue
            except OSError as exc:
                problems[key] = f"unreadable: {exc.strerror}"
                continue
            written = recorded.get(key)
            if written is not None and written.md5 is not None:
                checked_by[BY_RECORD] += 1
                md5_hex = hashlib.md5(body).hexdigest()
                if len(body) != written.size:
                    problems[key] = _wrong_size(len(body), written)
                elif md5_hex != written.md5.hex():
                    problems[key] = _wrong_digest(md5_hex, written)
                continue
            checked_by[BY_KEY_DIGEST] += 1
            try:
                verify_body(key, body)
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

    def put(self, key: str, body: bytes) -> ObjectDigest:
        """PUT with Content-MD5 and a SHA-256 checksum, which S3 verifies before storing; then check
        that the ETag S3 answers is the MD5 of our bytes (for plain and SSE-S3 objects it is), so a
        server or proxy that stored other bytes is caught too. A mismatched object is deleted.
        Under SSE-KMS or SSE-C the ETag is not the MD5: nothing to compare, and none is recorded."""
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
        etag_is_md5 = (
            _is_md5(etag)
            and answer.get("ServerSideEncryption", "AES256") == "AES256"
            and "SSECustomerAlgorithm" not in answer
        )
        if etag_is_md5 and etag != md5.hexdigest():
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (BotoCoreError, ClientError):  # unusable either way: replay and prune check digests
                log.warning("could not delete the mismatched object s3://%s/%s", self.bucket, key)
            raise ArchiveUnavailable(
                f"S3 put s3://{self.bucket}/{key} stored other bytes than sent "
                f"(ETag {etag}, expected {md5.hexdigest()}); retry"
            )
        return ObjectDigest(len(body), md5.digest() if etag_is_md5 else None)

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

    def audit(
        self,
        keys: list[str],
        recorded: Mapping[str, ObjectDigest] | None = None,
        checked_by: Counter[str] | None = None,
    ) -> dict[str, str]:
        """key -> what is wrong with its object, for each key whose object is missing or not as written.

        Every object's Size and ETag come from listing its hour prefix from its first key to its
        last (a call per 1,000 objects), AUDIT_CALLS_AT_ONCE listings at a time. An object with a
        recorded size and MD5 is compared with them ("wrong size", "wrong digest"); an ETag
        other than the recorded MD5 is confirmed by reading the object back against its key's
        digest first (the same bytes copied or re-encrypted get a new ETag). The objects no
        recorded MD5 vouches for (no digest recorded, a PUT under SSE-KMS, a listed ETag that is
        not an MD5) are read back by a random sample of SAMPLE_PER_THOUSAND per 1,000, all of
        them when one of the sample does not match ("corrupt"). `checked_by`, when given, counts
        the objects found by how they were checked.
        """
        recorded = recorded or {}
        checked_by = Counter() if checked_by is None else checked_by
        problems: dict[str, str] = {}
        etag_differs: list[str] = []
        unvouched: list[str] = []
        with ThreadPoolExecutor(AUDIT_CALLS_AT_ONCE) as pool:
            listed = self._listed(keys, pool)
            for key in keys:
                if key not in listed:
                    problems[key] = "missing"
                    continue
                size, etag = listed[key]
                written = recorded.get(key)
                md5 = written.md5.hex() if written is not None and written.md5 is not None else None
                if written is None:
                    how = BY_SAMPLE
                elif md5 is None or not _is_md5(etag):
                    how = BY_SIZE_AND_SAMPLE
                else:
                    how = BY_RECORD
                checked_by[how] += 1
                if written is not None and size != written.size:
                    problems[key] = _wrong_size(size, written)
                elif how != BY_RECORD:
                    unvouched.append(key)
                elif etag != md5:
                    etag_differs.append(key)
            for key, corrupt in zip(etag_differs, pool.map(self._corruption, etag_differs), strict=True):
                if corrupt:
                    problems[key] = _wrong_digest(listed[key][1], recorded[key])
                else:
                    log.warning("%s: its ETag is not the MD5 recorded at write, but it reads back intact", key)
            sampled = min(len(unvouched), math.ceil(len(unvouched) / 1000) * SAMPLE_PER_THOUSAND)
            sample = random.sample(unvouched, sampled)
            for keys_to_read in (sample, unvouched):
                found = dict(problem for problem in pool.map(self._corruption, keys_to_read) if problem)
                problems.update(found)
                if not found:
                    break
        return problems

    def _listed(self, keys: list[str], pool: ThreadPoolExecutor) -> dict[str, tuple[int, str]]:
        """key -> (Size, ETag) of the objects listed around `keys`: per hour prefix, a listing from
        each run of LIST_PAGE keys' first to its last (keys sort as S3 lists them), in `pool`."""
        by_prefix: dict[str, list[str]] = {}
        for key in sorted(keys):
            by_prefix.setdefault(key.rsplit("/", 1)[0] + "/", []).append(key)
        runs = [
            (prefix, in_prefix[i], in_prefix[min(i + LIST_PAGE, len(in_prefix)) - 1])
            for prefix, in_prefix in by_prefix.items()
            for i in range(0, len(in_prefix), LIST_PAGE)
        ]
        listed: dict[str, tuple[int, str]] = {}
        for found in pool.map(lambda run: self._list_run(*run), runs):
            listed.update(found)
        return listed

    def _list_run(self, key_prefix: str, first: str, last: str) -> dict[str, tuple[int, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        found: dict[str, tuple[int, str]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            # StartAfter is exclusive: start after a string just below `first`
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key_prefix, StartAfter=first[:-1]):
                contents = page.get("Contents", [])
                for item in contents:
                    found[item["Key"]] = (item["Size"], item.get("ETag", "").strip('"'))
                if not contents or contents[-1]["Key"] >= last:
                    break
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveUnavailable(f"S3 list s3://{self.bucket}/{key_prefix} failed: {exc}") from exc
        return found

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


def _wrong_size(size: int, written: ObjectDigest) -> str:
    return f"wrong size: {size} bytes, {written.size} recorded at write"


def _wrong_digest(md5_hex: str, written: ObjectDigest) -> str:
    return f"wrong digest: MD5 {md5_hex}, {written.md5.hex() if written.md5 else None} recorded at write"


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
