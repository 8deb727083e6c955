"""Deleting a person from the archive and staging: their events go, everyone else's stay byte
for byte, replay cannot bring them back, and a stopped deletion is finished by running again."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest

from segment_elt.control import connections, privacy
from segment_elt.ingest import landing
from segment_elt.ingest.archive import group_object, object_key, open_archive, requests_in
from segment_elt.pipeline import erasure, replay

T0 = dt.datetime(2026, 11, 3, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["file", "s3"])
def archive(request):
    return open_archive(request.getfixturevalue("archive_url" if request.param == "file" else "s3_archive_url"))


def event(n: int, user: str | None = None, anon: str | None = None, **extra) -> dict:
    found = {"type": "track", "event": "Report Created", "messageId": f"m-{n}", "timestamp": T0.isoformat()}
    found |= {"userId": user} if user else {}
    found |= {"anonymousId": anon} if anon else {}
    return found | extra


def land(db, archive, connection_id: str, org: str, at: dt.datetime, bodies: list[str]) -> str:
    """One group object of `bodies` (exact texts), landed as the receiver lands a group (noting
    an object that holds events staged before)."""
    requests = [(at + dt.timedelta(milliseconds=i), text) for i, text in enumerate(bodies)]
    body = group_object(requests)
    key = object_key(archive.prefix, org, connection_id, at, body)
    archive.put(key, body)
    landing.insert_group(
        db,
        connection_id=connection_id,
        org_id=org,
        archive_key=key,
        requests=[(when, text, landing.parse_body(text.encode())[1]) for when, text in requests],
        note_duplicates=True,
    )
    return key


def archived_events(archive, org: str) -> dict[str, list[str]]:
    """messageId -> the exact bytes of each archived copy of the event, over the whole archive."""
    found: dict[str, list[str]] = {}
    decoder = json.JSONDecoder()
    for key in archive.list(f"{archive.prefix}/org={org}/" if archive.prefix else f"org={org}/"):
        for _, raw in requests_in(key, archive.get(key)):
            text = raw.decode()
            _, events = landing.parse_body(raw)
            at = text.index("[") + 1 if text.lstrip().startswith("[") else 0
            for parsed in events:
                while text[at] in " \t\r\n,":
                    at += 1
                _, end = decoder.raw_decode(text, at)
                found.setdefault(parsed["messageId"], []).append(text[at:end])
                at = end
    return found


@pytest.fixture
def world(db, archive):
    """Two connections of org acme; alice's events mixed into others' objects and batch bodies."""
    first = connections.create(db, "acme").connection_id
    second = connections.create(db, "acme").connection_id
    other_org = connections.create(db, "globex").connection_id
    bodies = {
        # a batch mixing alice, bob and an anonymous visitor alice logged in from, spaced oddly
        "mixed": '[ {"type":"track","event":"A","messageId":"m-1","userId":"alice"} ,\n'
        '{"type":"track","event":"B","messageId":"m-2","userId":"bob","properties":{"x":  1}},'
        '{"type":"page","messageId":"m-3","anonymousId":"visitor-1"} ]',
        "bob": json.dumps(event(4, "bob"), indent=1),
        "alice-identify": json.dumps(event(5, "alice", "visitor-1", type="identify", traits={"email": "A@x.io"})),
        "alice-only": json.dumps([event(6, "alice"), event(7, "alice")]),
        "carol-shared-device": json.dumps(event(8, None, "visitor-2")),
    }
    land(db, archive, first, "acme", T0, [bodies["mixed"], bodies["bob"]])
    land(db, archive, first, "acme", T0 + dt.timedelta(hours=1), [bodies["alice-identify"]])
    land(db, archive, second, "acme", T0 + dt.timedelta(days=1), [bodies["alice-only"], bodies["carol-shared-device"]])
    # the same userId in another org is another person
    land(db, archive, other_org, "globex", T0, [json.dumps(event(9, "alice"))])
    return {"first": first, "second": second, "other_org": other_org}


def staged(db, org: str) -> set[str]:
    return {m for (m,) in db.execute("select message_id from raw.segment_events where org_id = %s", (org,))}


def no_rebuild() -> None:
    """These tests have no dbt models to rebuild (tests/privacy/test_erasure_marts.py has)."""


def test_deletion_removes_the_person_everywhere_and_keeps_others_byte_for_byte(db, archive, world):
    before = archived_events(archive, "acme")
    times_before = {key.rsplit("-", 1)[0] for key in archive.list("")}  # folder and receive time of each key
    [regulation] = privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"], requested_by="dpo@acme")
    erasure.run(db, archive, rebuild=no_rebuild)
    assert {key.rsplit("-", 1)[0] for key in archive.list("")} < times_before  # one object went entirely

    alice = {"m-1", "m-3", "m-5", "m-6", "m-7"}  # m-3: visitor-1's page, stitched to alice by m-5
    after = archived_events(archive, "acme")
    assert set(after) == set(before) - alice
    assert after == {m: copies for m, copies in before.items() if m not in alice}  # the very bytes
    assert staged(db, "acme") == {"m-2", "m-4", "m-8"}
    assert staged(db, "globex") == {"m-9"}
    # every kept row points at an object that holds it
    for key, message_id in db.execute("select archive_key, message_id from raw.segment_events"):
        assert message_id.encode() in archive.get(key)
    row = privacy.status(db, "acme")[0]
    assert row["regulation_id"] == regulation and row["state"] == "done" and row["requested_by"] == "dpo@acme"
    assert row["counts"]["archive_events"] == 5 and row["counts"]["raw_rows"] == 5
    assert row["subject_hash"] != "alice" and "alice" not in json.dumps(row, default=str)
    assert db.execute("select subject_enc from control.regulations").fetchone()[0] is None

    # replay and segment_daily's re-landing read the archive: alice never comes back
    db.execute("delete from raw.segment_events")
    for connection_id in (world["first"], world["second"]):
        replay.replay(db, archive, connection_id, "acme", T0.date(), T0.date() + dt.timedelta(days=1))
    assert staged(db, "acme") == {"m-2", "m-4", "m-8"}


class Reads:
    """The archive, recording the keys read."""

    def __init__(self, archive):
        self.archive, self.keys = archive, []

    def __getattr__(self, name):
        return getattr(self.archive, name)

    def get(self, key: str) -> bytes:
        self.keys.append(key)
        return self.archive.get(key)


def test_only_objects_that_can_hold_the_people_are_read(db, archive):
    """Objects whose every event a staged row names, none of them the person's, are not read;
    a retried request's copy of their event (staged under the first object) and an object
    whose first request retention pruned are."""
    cid = connections.create(db, "acme").connection_id
    bob_only = land(db, archive, cid, "acme", T0, [json.dumps(event(1, "bob"))])
    first = land(db, archive, cid, "acme", T0 + dt.timedelta(minutes=1), [json.dumps(event(2, "alice"))])
    # a group: carol's new request, then alice's request retried (its event staged under `first`)
    retried = land(
        db,
        archive,
        cid,
        "acme",
        T0 + dt.timedelta(minutes=2),
        [json.dumps(event(3, "carol")), json.dumps(event(2, "alice"))],
    )
    # alice's request, then dave's; retention then pruned the first request's row
    pruned = land(
        db,
        archive,
        cid,
        "acme",
        T0 + dt.timedelta(minutes=3),
        [json.dumps(event(4, "alice")), json.dumps(event(5, "dave"))],
    )
    db.execute("delete from raw.segment_events where message_id = 'm-4'")
    privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"])
    reading = Reads(archive)
    erasure.run(db, reading, rebuild=no_rebuild)
    assert sorted(reading.keys) == sorted([first, retried, pruned])
    assert bob_only in set(archive.list(""))
    assert set(archived_events(archive, "acme")) == {"m-1", "m-3", "m-5"}
    assert staged(db, "acme") == {"m-1", "m-3", "m-5"}
    for key, message_id in db.execute("select archive_key, message_id from raw.segment_events"):
        assert message_id.encode() in archive.get(key)


def test_running_again_changes_nothing(db, archive, world):
    privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"])
    erasure.run(db, archive, rebuild=no_rebuild)
    listing = {key: archive.get(key) for key in archive.list("")}
    rows = db.execute("select * from raw.segment_events order by 1, 3").fetchall()

    privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"])
    erasure.run(db, archive, rebuild=no_rebuild)
    assert {key: archive.get(key) for key in archive.list("")} == listing
    assert db.execute("select * from raw.segment_events order by 1, 3").fetchall() == rows
    assert privacy.status(db, "acme")[0]["counts"] == {}


def test_a_deletion_stopped_midway_is_finished_by_running_again(db, archive, world):
    # an object alice is in that cannot be read back intact stops the deletion partway
    keys = sorted(archive.list(""))
    broken = next(k for k in keys if f"connection={world['second']}" in k)
    intact = archive.get(broken)
    _overwrite(archive, broken, intact[:-5])
    privacy.request(db, "acme", privacy.SUPPRESS_WITH_DELETE, ["alice"])
    with pytest.raises(Exception, match="cannot be read back intact"):
        erasure.run(db, archive, rebuild=no_rebuild)
    [row] = privacy.status(db, "acme")
    assert row["state"] == "failed" and "intact" in row["error"]
    assert row["counts"]["archive_events"] == 3  # the objects before the broken one are done
    assert privacy.unfinished(db)[0].user_id == "alice"  # still known, encrypted, to finish the work

    _overwrite(archive, broken, intact)  # the operator restores the object
    assert len(erasure.run(db, archive, rebuild=no_rebuild)) == 1
    [row] = privacy.status(db, "acme")
    assert row["state"] == "done" and row["error"] is None and row["counts"]["archive_events"] == 5
    assert set(archived_events(archive, "acme")) == {"m-2", "m-4", "m-8"}
    assert erasure.run(db, archive, rebuild=no_rebuild) == []


def _overwrite(archive, key: str, body: bytes) -> None:
    """Replace an object's bytes behind the archive's back (a damaged disk or a bad copy)."""
    if hasattr(archive, "root"):
        (archive.root / key).write_bytes(body)
    else:
        archive.client.put_object(Bucket=archive.bucket, Key=key, Body=body)


def test_the_keyed_hash_is_stable_and_not_the_id(db, world):
    key = privacy.hash_key(db)
    assert privacy.hash_key(db) == key
    digest = privacy.subject_hash(key, "acme", "alice")
    assert digest == privacy.subject_hash(key, "acme", "alice") != privacy.subject_hash(key, "globex", "alice")
    assert digest != hashlib.sha256(b"alice").hexdigest()


def test_mistakes_a_person_can_type_are_one_line(db, world):
    from segment_elt.errors import UserError

    with pytest.raises(UserError, match="no org 'nope'"):
        privacy.request(db, "nope", privacy.DELETE_ONLY, ["alice"])
    with pytest.raises(UserError, match="at least one userId"):
        privacy.request(db, "acme", privacy.SUPPRESS, ["  "])
    with pytest.raises(UserError, match="single --user-id"):
        privacy.request(db, "acme", privacy.DELETE_ONLY, ["a", "b"], email="a@x.io")
    assert privacy.status(db) == []


def test_the_hash_key_survives_a_fernet_key_rotation(db, world, monkeypatch):
    from cryptography.fernet import Fernet

    from segment_elt.control import keys

    before = privacy.hash_key(db)
    old = os.environ["SEGMENT_ELT_FERNET_KEY"]
    monkeypatch.setenv("SEGMENT_ELT_FERNET_KEY", f"{Fernet.generate_key().decode()},{old}")
    assert keys.reencrypt_all(db) >= 1
    monkeypatch.setenv("SEGMENT_ELT_FERNET_KEY", os.environ["SEGMENT_ELT_FERNET_KEY"].split(",")[0])
    assert privacy.hash_key(db) == before  # suppressions and the record's hashes stay valid
