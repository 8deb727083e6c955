"""Retention's audit checks every archive object against the size and MD5 recorded with its rows
when it was written: an object truncated, grown, altered or replaced outside any read-back sample
is found and its rows are kept, counted by reason; a rewrite that recorded its new digest (a
privacy deletion) is not flagged; rows staged before digests were recorded are audited as before
(listing plus a read-back sample). Every writer of archive objects records what it wrote."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import boto3
import pytest

from segment_elt.control import connections, privacy
from segment_elt.ingest import archive as archive_module
from segment_elt.ingest import landing
from segment_elt.ingest.archive import ObjectDigest, group_object, object_key, open_archive
from segment_elt.local import samples
from segment_elt.pipeline import erasure, maintenance, replay
from tests.receiver.conftest import make_hook
from tests.reliability.test_retention import stage

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
EXPIRED = NOW - dt.timedelta(days=40)


@pytest.fixture(params=["file", "s3"])
def archive(request):
    return open_archive(request.getfixturevalue("archive_url" if request.param == "file" else "s3_archive_url"))


def land(db, archive, created, bodies: list[str], at: dt.datetime, record: bool = True) -> str:
    """One group object of `bodies`, put and staged as the receiver does; `record=False` stages
    the rows as before migration 14 (no digest). Returns the object's key."""
    requests = [(at + dt.timedelta(milliseconds=i), text) for i, text in enumerate(bodies)]
    body = group_object(requests)
    key = object_key(archive.prefix, created.org_id, created.connection_id, at, body)
    written = archive.put(key, body)
    landing.insert_group(
        db,
        connection_id=created.connection_id,
        org_id=created.org_id,
        archive_key=key,
        requests=[(when, text, landing.parse_body(text.encode())[1]) for when, text in requests],
        archive_digest=written if record else None,
    )
    return key


def land_each(db, archive, created, n: int, record: bool = True) -> list[str]:
    """n objects of one single-event request each, a minute apart; their keys."""
    return [
        land(db, archive, created, [json.dumps(samples.event("track", user_id=f"u{i}"))], EXPIRED + i * MINUTE, record)
        for i in range(n)
    ]


MINUTE = dt.timedelta(minutes=1)


def overwrite(archive, key: str, body: bytes) -> None:
    """Replace an object's bytes behind the archive's back (a bad copy, a damaged disk)."""
    if hasattr(archive, "root"):
        (archive.root / key).write_bytes(body)
    else:
        archive.client.put_object(Bucket=archive.bucket, Key=key, Body=body)


def remove(archive, key: str) -> None:
    if hasattr(archive, "root"):
        (archive.root / key).unlink()
    else:
        archive.client.delete_object(Bucket=archive.bucket, Key=key)


def same_size_other_bytes(body: bytes) -> bytes:
    at = body.index(b'"u') + 2  # a userId's first character: still valid JSON, another event
    return body[:at] + (b"v" if body[at : at + 1] != b"v" else b"w") + body[at + 1 :]


@pytest.fixture
def reads(monkeypatch):
    """The keys the audit reads back; its random sample draws only objects the test left intact."""
    read: list[str] = []
    changed: set[str] = set()
    monkeypatch.setattr(
        archive_module.random, "sample", lambda keys, k: [key for key in keys if key not in changed][:k]
    )
    for cls in (archive_module.S3Archive, archive_module.FileArchive):
        original = cls.get

        def get(self, key, original=original):
            read.append(key)
            return original(self, key)

        monkeypatch.setattr(cls, "get", get)
    return read, changed


def kept_keys(db) -> set[str]:
    return {key for (key,) in db.execute("select distinct archive_key from raw.segment_events")}


def test_on_s3_objects_changed_outside_the_sample_are_found_by_the_digests_the_receiver_recorded(
    db, database_url, s3_archive_url, receiver_factory, reads
):
    hook = make_hook(db, receiver_factory(), rate_limit=1_000_000)
    posted = [samples.event("track", user_id=f"u{i}") for i in range(11)]
    posted.append(samples.event("track", user_id="nul", properties={"note": "a\u0000b"}))  # jsonb refuses NUL
    for event in posted:  # one after the other: an object each
        assert hook.post(event).status_code == 200
    s3 = boto3.client("s3")
    bucket = s3_archive_url.removeprefix("s3://").split("/", 1)[0]
    recorded = db.execute("select archive_key, archive_size, archive_md5 from raw.segment_events").fetchall()
    assert len(recorded) == 12
    for key, size, md5 in recorded:  # what a listing shows is what was recorded, on both landing paths
        head = s3.head_object(Bucket=bucket, Key=key)
        assert (size, md5.hex()) == (head["ContentLength"], head["ETag"].strip('"'))
    keys = sorted(key for key, _, _ in recorded)
    stage(database_url)

    read, changed = reads
    changed.update(keys[:4])
    body = {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys[:3]}
    s3.put_object(Bucket=bucket, Key=keys[0], Body=body[keys[0]][:-7])  # truncated
    s3.put_object(Bucket=bucket, Key=keys[1], Body=body[keys[1]] + b" ")  # grown
    s3.put_object(Bucket=bucket, Key=keys[2], Body=same_size_other_bytes(body[keys[2]]))  # replaced, same size
    s3.delete_object(Bucket=bucket, Key=keys[3])

    done = maintenance.prune(db, open_archive(s3_archive_url), 30, now=NOW + dt.timedelta(days=40))
    assert done.kept_rows == {
        "archive object wrong size": 2,
        "archive object wrong digest": 1,
        "archive object missing": 1,
    }
    assert (done.deleted_rows, kept_keys(db)) == (8, set(keys[:4]))
    assert done.audited == {archive_module.BY_RECORD: 11}
    assert read == [keys[2]]  # no sample: only the object whose ETag differs is read, to confirm


def test_missing_and_changed_objects_are_named_and_their_rows_kept(db, database_url, archive, reads):
    created = connections.create(db, "acme")
    keys = land_each(db, archive, created, 6)
    stage(database_url)
    _, changed = reads
    changed.update(keys[:3])
    remove(archive, keys[0])
    overwrite(archive, keys[1], archive.get(keys[1])[:-3])
    overwrite(archive, keys[2], same_size_other_bytes(archive.get(keys[2])))

    done = maintenance.prune(db, archive, 30, now=NOW)
    assert done.kept_rows == {
        "archive object missing": 1,
        "archive object wrong size": 1,
        "archive object wrong digest": 1,
    }
    assert (done.deleted_rows, kept_keys(db)) == (3, set(keys[:3]))
    assert done.audited == {archive_module.BY_RECORD: 5}


def test_an_object_rewritten_by_a_privacy_deletion_is_not_flagged(db, database_url, archive):
    created = connections.create(db, "acme")
    mixed = json.dumps([samples.event("track", user_id="alice"), samples.event("track", user_id="bob")])
    key = land(db, archive, created, [mixed, json.dumps(samples.event("page", user_id="carol"))], EXPIRED)
    others = land_each(db, archive, created, 2)
    privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"])
    erasure.run(db, archive, rebuild=lambda: None)
    [(new_key, size, md5)] = db.execute(
        "select distinct archive_key, archive_size, archive_md5 from raw.segment_events where archive_key <> all(%s)",
        (others,),
    ).fetchall()
    assert new_key != key and (size, md5) == (len(archive.get(new_key)), hashlib.md5(archive.get(new_key)).digest())
    stage(database_url)

    done = maintenance.prune(db, archive, 30, now=NOW)
    assert (done.deleted_rows, done.kept_rows) == (4, {})
    assert done.audited == {archive_module.BY_RECORD: 3}


def test_replay_records_the_digest_of_what_it_relands(db, archive):
    created = connections.create(db, "acme")
    keys = land_each(db, archive, created, 2, record=False)
    db.execute("delete from raw.segment_events where archive_key = %s", (keys[0],))
    replay.replay(db, archive, created.connection_id, created.org_id, EXPIRED.date(), EXPIRED.date())
    rows = dict(db.execute("select archive_key, archive_md5 from raw.segment_events").fetchall())
    assert rows == {keys[0]: hashlib.md5(archive.get(keys[0])).digest(), keys[1]: None}  # staged ones stay


def test_rows_staged_before_digests_were_recorded_are_audited_as_before(db, database_url, archive, reads):
    created = connections.create(db, "acme")
    old = land_each(db, archive, created, 4, record=False)
    new = land(db, archive, created, [json.dumps(samples.event("track", user_id="n"))], EXPIRED + dt.timedelta(hours=1))
    stage(database_url)
    read, _ = reads
    overwrite(archive, old[0], archive.get(old[0])[:-3])  # in the sample (the fixture leaves it there)
    read.clear()

    done = maintenance.prune(db, archive, 30, now=NOW)
    assert done.kept_rows == {"archive object corrupt": 1}
    assert (done.deleted_rows, kept_keys(db)) == (4, {old[0]})
    if hasattr(archive, "root"):  # every object read back against its key, as before
        assert done.audited == {archive_module.BY_KEY_DIGEST: 4, archive_module.BY_RECORD: 1}
    else:  # the sample met the corrupt one, so all the old ones were read; the recorded one never
        assert done.audited == {archive_module.BY_SAMPLE: 4, archive_module.BY_RECORD: 1}
        assert sorted(read) == sorted(old + old) and new not in read


def test_on_s3_an_etag_that_is_not_an_md5_falls_back_to_the_size_and_a_sample(db, database_url, s3_archive_url, reads):
    """A multipart upload's ETag is not the MD5 of the object: the recorded size still holds every
    object to account, and their bytes are read back by a sample."""
    archive = open_archive(s3_archive_url)
    created = connections.create(db, "acme")
    keys = land_each(db, archive, created, 4)
    stage(database_url)
    s3, bucket = archive.client, archive.bucket

    def multipart(key: str, body: bytes) -> None:
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)
        parts = {"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]}
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload=parts)

    read, changed = reads
    multipart(keys[0], archive.get(keys[0]))  # the same bytes, copied
    multipart(keys[1], archive.get(keys[1])[:-2])  # shorter: the size says so, no read needed
    changed.add(keys[1])
    assert "-" in s3.head_object(Bucket=bucket, Key=keys[0])["ETag"]
    read.clear()

    done = maintenance.prune(db, archive, 30, now=NOW)
    assert done.kept_rows == {"archive object wrong size": 1}
    assert done.audited == {archive_module.BY_RECORD: 2, archive_module.BY_SIZE_AND_SAMPLE: 2}
    assert read == [keys[0]]  # the sample of the objects no MD5 vouches for


def test_the_recorded_digest_is_what_a_put_wrote(archive):
    body = b'{"type":"track"}'
    key = object_key(archive.prefix, "acme", "c1", NOW, body)
    assert archive.put(key, body) == ObjectDigest(len(body), hashlib.md5(body).digest())


def test_on_s3_under_sse_kms_the_size_is_recorded_and_the_bytes_are_sampled(db, database_url, s3_archive_url, reads):
    """Under SSE-KMS S3's ETag is not the MD5: a put records no MD5, and the audit holds the
    object to its recorded size and reads a sample back."""
    archive = open_archive(s3_archive_url)
    archive.client.put_bucket_encryption(
        Bucket=archive.bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    created = connections.create(db, "acme")
    keys = land_each(db, archive, created, 3)
    assert {md5 for (md5,) in db.execute("select archive_md5 from raw.segment_events")} == {None}
    stage(database_url)
    read, changed = reads
    overwrite(archive, keys[0], archive.get(keys[0]) + b"\n")
    changed.add(keys[0])
    read.clear()

    done = maintenance.prune(db, archive, 30, now=NOW)
    assert done.kept_rows == {"archive object wrong size": 1}
    assert done.audited == {archive_module.BY_SIZE_AND_SAMPLE: 3}
    assert sorted(read) == sorted(keys[1:])
