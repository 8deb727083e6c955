"""The rejects log, through a real receiver: refusals of a known connection are recorded with
status, reason and size (a 400 with the body's head), floods are folded, the log is bounded, and
`connections recent-events --rejected` prints it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from segment_elt.ingest.receiver import rejects
from segment_elt.local import samples
from tests.receiver.conftest import make_hook

CLI = str(Path(sys.executable).parent / "segment-elt")


def logged(db, hook) -> list[tuple]:
    return db.execute(
        "select status, reason, repeats, body_bytes, body_head from control.rejects"
        " where connection_id = %s order by rejected_at",
        (hook.connection_id,),
    ).fetchall()


def test_refusals_are_recorded_without_headers_and_printed(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=1, env={"SEGMENT_ELT_MAX_BODY_BYTES": "4096"}), rate_limit=1)
    good = samples.event("track", user_id="u1", name="Report Created")
    assert hook.post(good, secret="not-the-secret").status_code == 401
    assert hook.post(b'{"type": "track", "userId": \x00 broken').status_code == 400
    assert hook.post(b"x" * 5000).status_code == 413
    assert hook.post([good, good]).status_code == 200  # a full bucket takes any batch; a 200 is not a reject
    assert hook.post(good).status_code == 429  # the bucket is in debt: over a cap of 1 per minute
    rows = logged(db, hook)
    assert [r[0] for r in rows] == [401, 400, 413, 429]
    assert rows[0][1] == "X-Signature does not match the body and the connection's shared secret"
    assert rows[1][3] == len(b'{"type": "track", "userId": \x00 broken') and rows[1][4].startswith('{"type": "track"')
    assert rows[2][3] == 5000 and rows[2][4] is None  # only 400s keep the body's head
    assert rows[3][1].startswith("the org's events-per-minute cap is reached")
    assert hook.secret not in json.dumps(rows, default=str)
    printed = subprocess.run(
        [CLI, "connections", "recent-events", hook.connection_id, "--rejected"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[0].split() == [
        "rejected",
        "status",
        "reason",
        "times",
        "bytes",
        "body",
        "(400s)",
    ]
    assert sum(" 429 " in line for line in printed.stdout.splitlines()) == 1


def test_a_flood_is_folded_and_the_log_is_bounded(db, archive_url, receiver_factory, monkeypatch):
    hook = make_hook(db, receiver_factory(workers=1))
    for _ in range(30):
        assert hook.post(samples.event("track", user_id="u1", name="x"), secret="wrong").status_code == 401
    time.sleep(rejects.FOLD_S + 0.1)
    assert hook.post(samples.event("track", user_id="u1", name="x"), secret="wrong").status_code == 401
    rows = logged(db, hook)
    assert len(rows) < 10 and sum(r[2] for r in rows) == 31  # folded, and every refusal counted
    # bounded: the newest KEEP rows per connection stay
    db.execute(
        "insert into control.rejects (connection_id, rejected_at, status, reason, body_bytes)"
        " select %s, now() - make_interval(secs => n), 401, 'old', 10 from generate_series(1, %s) as n",
        (hook.connection_id, rejects.KEEP + 50),
    )
    assert hook.post(b"[", secret=None).status_code == 400
    (kept,) = db.execute(
        "select count(*) from control.rejects where connection_id = %s", (hook.connection_id,)
    ).fetchone()
    assert kept == rejects.KEEP
    assert logged(db, hook)[-1][0] == 400  # the newest stays


def test_unknown_connections_are_not_logged(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=1))
    body = b"{}"
    answer = requests.post(
        hook.url.replace(hook.connection_id, "conn_unknown"), data=body, headers=samples.headers("s", body), timeout=10
    )
    assert answer.status_code == 404
    assert db.execute("select count(*) from control.rejects").fetchone()[0] == 0
