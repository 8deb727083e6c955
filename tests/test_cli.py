"""`segment-elt` through its real console script: outputs, errors on stderr, exit codes, secrets at rest."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from segment_elt.ingest import landing
from segment_elt.local import samples
from segment_elt.pipeline.transform import run_dbt

CLI = str(Path(sys.executable).parent / "segment-elt")


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [CLI, *args], capture_output=True, text=True, env={**os.environ, "AIRFLOW_API_URL": "http://127.0.0.1:9"}
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def created(database_url):
    return json.loads(cli("connections", "create", "--org", "acme", "--name", "web", "--json").stdout)


def test_create_prints_url_and_secret_once_and_stores_it_encrypted(created, db):
    assert {"connection_id", "org_id", "webhook_url", "secret"} <= set(created)
    assert created["webhook_url"].endswith(f"/webhooks/segment/{created['connection_id']}")
    stored = db.execute("select secret_enc from control.connections").fetchone()[0]
    assert created["secret"] not in stored
    listed = cli("connections", "list", "--json").stdout
    assert created["secret"] not in listed and created["connection_id"] in listed


def test_allowlist_rate_limit_and_delete(created, db, tmp_path):
    cid = created["connection_id"]
    assert json.loads(cli("connections", "allowlist", cid, "--add", "Signed Up", "$page", "--json").stdout)[
        "allowlist"
    ] == ["$page", "Signed Up"]
    assert cli("connections", "allowlist", cid, "--remove", "$page").stdout.strip() == "Signed Up"
    names = tmp_path / "names.txt"
    names.write_text("A\nB\n\n")
    assert cli("connections", "allowlist", cid, "--set-file", str(names)).stdout.split() == ["A", "B"]
    assert "1200" in cli("connections", "rate-limit", cid, "1200").stdout
    assert db.execute("select rate_limit_per_minute from control.orgs").fetchone()[0] == 1200
    bad = cli("connections", "rate-limit", cid, "0", ok=False)
    assert bad.returncode == 2 and "not a whole number from 1 to 2147483647" in bad.stderr
    cli("connections", "delete", cid)
    gone = cli("connections", "allowlist", cid, "--add", "X", ok=False)
    assert gone.returncode == 1 and "no connection" in gone.stderr


def test_recent_events_shows_what_segment_sent(created, db):
    cid = created["connection_id"]
    cli("connections", "allowlist", cid, "--add", "Signed Up")
    for event in (
        samples.event("track", user_id="u1", name="Signed Up", group_id="g-1"),
        samples.event("page", user_id="u2"),
    ):
        landing.insert_events(
            db,
            connection_id=cid,
            org_id="acme",
            text=json.dumps(event),
            events=[event],
            received_at=dt.datetime.now(dt.UTC),
            archive_key="k",
        )
    rows = json.loads(cli("connections", "recent-events", cid, "--json").stdout)
    by_name = {r["event_name"]: r for r in rows}
    assert by_name["Signed Up"]["in_allowlist"] and by_name["Signed Up"]["external_group_id"] == "g-1"
    assert not by_name["$page"]["in_allowlist"] and by_name["$page"]["external_user_id"] == "u2"


def test_imports_upsert_and_reject_bad_rows_whole(created, db, tmp_path):
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("account_id,name,external_id,tier\na1,Acme,ext-1,gold\na2,Beta,,silver\n")
    assert "2 new, 0 updated, 0 unchanged rows" in cli("accounts", "import", "--org", "acme", str(accounts)).stdout
    accounts.write_text("account_id,name,external_id,tier\na1,Acme Inc,ext-1,platinum\n")
    cli("accounts", "import", "--org", "acme", str(accounts))
    assert db.execute("select name, traits->>'tier' from app.accounts where account_id = 'a1'").fetchone() == (
        "Acme Inc",
        "platinum",
    )
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("contact_id,account_id,email\nc1,a1,bob@acme.test\nc2,a1,not-an-email\n")
    bad = cli("contacts", "import", "--org", "acme", str(contacts), ok=False)
    assert bad.returncode == 1 and "line 3" in bad.stderr
    assert db.execute("select count(*) from app.contacts").fetchone()[0] == 0
    missing = cli("accounts", "import", "--org", "nope", str(accounts), ok=False)
    assert "no org" in missing.stderr


def test_errors_are_sentences_on_stderr(database_url):
    bad = cli("connections", "create", "--org", "bad org!", ok=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: org id") and not bad.stdout
    unreachable = subprocess.run(
        [CLI, "connections", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/x"},
    )
    assert unreachable.returncode == 1 and "cannot reach PostgreSQL" in unreachable.stderr


def _bad_allowlist_file(tmp_path: Path) -> str:
    path = tmp_path / "names.txt"
    path.write_bytes(b"\xff\xfeSigned Up\n")
    return str(path)


@pytest.mark.parametrize(
    ("args", "env", "status", "says"),
    [
        (["connections", "rate-limit", "{cid}", "99999999999"], {}, 2, "not a whole number from 1 to 2147483647"),
        (["connections", "create", "--org", "acme", "--rate-limit", "1e3"], {}, 2, "not a whole number"),
        (["connections", "recent-events", "{cid}", "--limit", "-1"], {}, 2, "not a whole number from 1 to 10000"),
        (["connections", "allowlist", "{cid}", "--set-file", "{bad_file}"], {}, 1, "is not UTF-8 text"),
        (["connections", "list"], {"DATABASE_URL": "host = = x"}, 1, "DATABASE_URL is not a PostgreSQL URL"),
        (
            ["connections", "list"],
            {"DATABASE_URL": "postgresql://u@127.0.0.1:notaport/x"},
            1,
            "cannot reach PostgreSQL",
        ),
        (
            ["connections", "create", "--org", "acme"],
            {"SEGMENT_ELT_FERNET_KEY": "not-a-key"},
            1,
            "not a valid Fernet key",
        ),
    ],
)
def test_any_input_a_person_can_type_gets_one_line_not_a_traceback(created, tmp_path, args, env, status, says):
    typed = [a.format(cid=created["connection_id"], bad_file=_bad_allowlist_file(tmp_path)) for a in args]
    done = subprocess.run([CLI, *typed], capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == status and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    if status == 1:
        assert len(done.stderr.strip().splitlines()) == 1


def test_help_has_examples_every_option_is_explained_and_version_prints():
    from segment_elt.cli import build_parser

    top = cli("--help").stdout
    assert "examples:" in top and "segment-elt pipeline run-once" in top
    assert cli("--version").stdout.strip().startswith("segment-elt 0.")
    unexplained = []
    parser = build_parser()
    groups = [a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0]))]
    for group in groups[0].choices.values():
        for command in group._subparsers._group_actions[0].choices.values():
            unexplained += [f"{command.prog} {a.dest}" for a in command._actions if not a.help]
    assert unexplained == []


def test_lists_are_tables_and_json_for_scripts(created):
    table = cli("connections", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["connection", "org", "name"] and set(table[1]) <= {"-", " "}
    assert created["connection_id"] in table[2]
    assert json.loads(cli("connections", "rate-limit", created["connection_id"], "900", "--json").stdout) == {
        "org_id": "acme",
        "rate_limit_per_minute": 900,
    }


def test_reconcile_without_airflow_runs_the_build_here(created, db):
    done = cli("connections", "reconcile", created["connection_id"])
    assert "reconciled" in done.stdout


def test_reconcile_with_a_wrong_airflow_password_is_one_clear_line(created):
    class RefusingAirflow(BaseHTTPRequestHandler):  # Airflow's /auth/token answer to a wrong password
        def do_POST(self):
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"detail": "Invalid credentials"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingAirflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            [CLI, "connections", "reconcile", created["connection_id"]],
            check=False,
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "AIRFLOW_API_URL": f"http://127.0.0.1:{server.server_port}",
                "AIRFLOW_USERNAME": "admin",
                "AIRFLOW_PASSWORD": "wrong",
            },
        )
    finally:
        server.shutdown()
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert "refused the credentials of user 'admin' (HTTP 401)" in done.stderr


def test_resolution_report_shows_rules_days_and_the_top_unresolved_values(created, db):
    cid = created["connection_id"]
    cli("connections", "allowlist", cid, "--add", "Login")
    not_built = cli("connections", "resolution", cid, ok=False)
    assert not_built.returncode == 1 and "not built yet: run `segment-elt pipeline run-once`" in not_built.stderr
    db.execute("insert into app.accounts (org_id, account_id, external_id) values ('acme', 'a1', 'ext-1')")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    events = [
        samples.event("track", user_id="u1", name="Login", group_id="ext-1", at=now),
        samples.event("track", user_id="u2", name="Login", group_id="grp-new", at=now - dt.timedelta(days=1)),
        samples.event("track", user_id="u2", name="Login", group_id="grp-new", at=now),
        samples.event("track", user_id="u3", name="Login", at=now - dt.timedelta(days=10)),
    ]
    for event in events:
        landing.insert_events(
            db,
            connection_id=cid,
            org_id="acme",
            text=json.dumps(event),
            events=[event],
            received_at=now,
            archive_key="k",
        )
    run_dbt(["build", "--exclude", "resource_type:test", "resource_type:unit_test"])

    found = json.loads(cli("connections", "resolution", cid, "--json").stdout)
    assert [(r["matched_by"], r["event_count"]) for r in found["by_rule"]] == [
        ("unresolved", 2),
        ("account:groupId->external_id", 1),
    ]
    assert [(str(r["event_date"]), r["event_count"], r["unresolved_count"]) for r in found["by_day"]] == [
        (str(now.date()), 2, 1),
        (str((now - dt.timedelta(days=1)).date()), 1, 1),
    ]
    assert [(r["kind"], r["value"], r["event_count"]) for r in found["unresolved_values"]] == [
        ("groupId", "grp-new", 2),
        ("userId", "u2", 2),
    ]
    assert dt.datetime.fromisoformat(found["unresolved_values"][0]["last_seen_at"]) == now
    month = json.loads(cli("connections", "resolution", cid, "--days", "30", "--json").stdout)
    assert ("userId", "u3", 1) in [(r["kind"], r["value"], r["event_count"]) for r in month["unresolved_values"]]

    table = cli("connections", "resolution", cid).stdout
    assert "66.7%" in table and "grp-new" in table and "unresolved share" in table
    unknown = cli("connections", "resolution", "conn_nope", ok=False)
    assert unknown.returncode == 1 and unknown.stderr.strip() == (
        "error: no connection 'conn_nope': see `segment-elt connections list`"
    )
    too_many = cli("connections", "resolution", cid, "--days", "0", ok=False)
    assert too_many.returncode == 2 and "not a whole number from 1 to 366" in too_many.stderr
