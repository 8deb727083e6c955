"""A deletion while events arrive through a real receiver: every event of anyone else that was
answered 200 is staged and archived (in an object its row points at), before and after."""

from __future__ import annotations

import threading

from segment_elt.control import privacy
from segment_elt.ingest.archive import open_archive, requests_in
from segment_elt.pipeline import erasure
from tests.privacy.test_erasure import event, no_rebuild
from tests.receiver.conftest import make_hook


def test_a_deletion_during_traffic_loses_nothing_of_anyone_else(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=2), rate_limit=1_000_000)
    archive = open_archive(archive_url)
    for n in range(300):  # history: alice mixed into others' batches
        assert hook.post([event(n, "alice"), event(10_000 + n, f"user-{n % 7}")]).status_code == 200
    answered: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 20_000
        while not stop.is_set():
            batch = [event(n, f"user-{n % 7}"), event(n + 1, "alice"), event(n + 2, "bob")]
            if hook.post(batch).status_code == 200:
                answered.extend(e["messageId"] for e in batch if e["userId"] != "alice")
            n += 3

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"])
        erasure.run(db, archive, rebuild=no_rebuild)
    finally:
        stop.set()
        sender.join()
    others = {f"m-{10_000 + n}" for n in range(300)} | set(answered)
    assert len(answered) > 30  # traffic really overlapped the deletion

    rows = dict(db.execute("select message_id, archive_key from raw.segment_events").fetchall())
    assert others <= set(rows)
    history_left = {m for m in rows if m.startswith("m-") and int(m[2:]) < 300}
    assert history_left == set()  # alice's history is gone; what she sent meanwhile is new data
    for key in set(rows.values()):
        text = b"".join(raw for _, raw in requests_in(key, archive.get(key))).decode()
        assert all(f'"{m}"' in text for m, k in rows.items() if k == key)
    archived = b"".join(archive.get(key) for key in archive.list("")).decode()
    assert not any(f'\\"m-{n}\\"' in archived for n in range(300))  # alice's history, from the archive too


def test_the_receiver_notes_the_objects_holding_duplicates(db, archive_url, receiver_factory):
    """A retried request's object holds events staged under the first one's: a deletion must
    read it whatever its staged rows say (erasure.Erasure.objects_to_read)."""
    hook = make_hook(db, receiver_factory(workers=1), rate_limit=1_000_000)
    archive = open_archive(archive_url)
    assert hook.post([event(1, "alice"), event(2, "bob")]).json() == {"accepted": 2, "duplicates": 0}
    assert hook.post([event(1, "alice"), event(3, "bob")]).json() == {"accepted": 1, "duplicates": 1}
    noted = {key for (key,) in db.execute("select archive_key from raw.archive_objects_with_duplicates")}
    [retried] = noted
    assert b'\\"m-1\\"' in archive.get(retried) and b'\\"m-3\\"' in archive.get(retried)
    assert len(set(archive.list(""))) == 2
