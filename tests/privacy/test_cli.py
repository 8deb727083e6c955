"""`segment-elt privacy` through its real console script: delete (archive, staging, models rebuilt),
suppress/unsuppress, status, and one-line errors that record nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time

from segment_elt.control import connections
from segment_elt.ingest.archive import open_archive
from segment_elt.pipeline.transform import run_dbt
from tests.privacy.test_erasure import event, land
from tests.test_cli import CLI, cli


def test_delete_with_suppress_erases_and_prints_the_record(database_url, archive_url, db, tmp_path):
    created = connections.create(db, "acme")
    archive = open_archive(archive_url)
    at = dt.datetime(2026, 11, 3, 10, tzinfo=dt.UTC)
    connections.allowlist(db, created.connection_id, add=["Report Created"])
    land(db, archive, created.connection_id, "acme", at, [json.dumps([event(1, "alice"), event(2, "bob")])])
    run_dbt(["build"])
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\nalice\n\n")

    done = cli("privacy", "delete", "--org", "acme", "--file", str(ids), "--suppress", "--json")
    [row] = json.loads(done.stdout)
    assert row["regulation_type"] == "SUPPRESS_WITH_DELETE" and row["state"] == "done"
    assert row["counts"] == {"archive_events": 1, "archive_objects": 1, "raw_rows": 1, "staging_rows": 1}
    assert "alice" not in done.stdout
    assert [m for (m,) in db.execute("select message_id from raw.segment_events")] == ["m-2"]
    assert db.execute("select message_id from analytics.product_events").fetchall() == [("m-2",)]  # rebuilt
    assert db.execute("select count(*) from control.suppressions").fetchone()[0] == 1

    cli("privacy", "unsuppress", "--org", "acme", "--user-id", "alice")
    assert db.execute("select count(*) from control.suppressions").fetchone()[0] == 0
    table = cli("privacy", "status", "--org", "acme").stdout
    assert table.splitlines()[0].split()[:4] == ["id", "org", "type", "userId"]
    assert "UNSUPPRESS" in table and "archive_events 1" in table


def test_mistakes_are_one_line_and_record_nothing(database_url, db):
    connections.create(db, "acme")
    for args, says in (
        (["privacy", "delete", "--org", "nope", "--user-id", "a"], "error: no org 'nope'"),
        (["privacy", "suppress", "--org", "acme"], "error: name at least one userId"),
        (["privacy", "delete", "--org", "acme", "--file", "/no/such.csv"], "error: cannot read /no/such.csv"),
    ):
        done = cli(*args, ok=False)
        assert done.returncode == 1 and done.stderr.startswith(says) and len(done.stderr.splitlines()) == 1, done.stderr
    assert cli("privacy", "status", "--json").stdout.strip() == "[]"


def test_a_deletion_killed_midway_is_left_unfinished_and_privacy_run_finishes_it(database_url, archive_url, db):
    created = connections.create(db, "acme")
    connections.allowlist(db, created.connection_id, add=["Report Created"])
    at = dt.datetime(2026, 11, 3, 10, tzinfo=dt.UTC)
    land(
        db,
        open_archive(archive_url),
        created.connection_id,
        "acme",
        at,
        [json.dumps([event(1, "alice"), event(2, "bob")])],
    )
    run_dbt(["build"])

    proc = subprocess.Popen(
        [CLI, "privacy", "delete", "--org", "acme", "--user-id", "alice"],
        env=os.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while db.execute("select state from control.regulations").fetchone() != ("rebuilding",):
        assert proc.poll() is None and time.monotonic() < deadline, "the deletion never reached its rebuild"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # a crash in the middle of the model rebuild
    proc.wait()
    state, secret = db.execute("select state, subject_enc from control.regulations").fetchone()
    assert state == "rebuilding" and secret is not None  # unfinished, and it says so

    done = cli("privacy", "run", "--json")
    [row] = json.loads(done.stdout)
    assert row["state"] == "done" and row["counts"]["archive_events"] == 1
    assert db.execute("select message_id from analytics.product_events").fetchall() == [("m-2",)]
    assert db.execute("select subject_enc from control.regulations").fetchone() == (None,)
