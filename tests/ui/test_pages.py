"""The Segment page against a real Airflow API server with the plugin loaded (tests/ui/conftest.py)."""

from __future__ import annotations

from html import unescape
from urllib.parse import quote

import psycopg
import pytest
import requests

from segment_elt.control import privacy
from segment_elt.local import samples
from tests.ui.conftest import ACCOUNT, ORG, ROLLUPS_RUN


def page(airflow, path: str) -> str:
    return f"{airflow.url}/segment{path}"


def test_the_plugin_is_loaded_with_nav_entries(airflow):
    plugins = requests.get(
        f"{airflow.url}/api/v2/plugins", headers={"Authorization": f"Bearer {airflow.token('admin')}"}, timeout=10
    ).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "segment_page")
    assert [v["href"] for v in ours["external_views"]] == [
        "/segment/connections",
        "/segment/identity",
        "/segment/outbound",
        "/segment/privacy",
    ]
    assert any(p["name"] == "cosmos" for p in plugins)


@pytest.mark.parametrize(
    "path",
    [
        "/connections",
        "/api/connections",
        "/identity",
        "/outbound",
        "/identity/rules",
        "/privacy",
        "/api/privacy",
        f"/accounts/{ORG}/{ACCOUNT['account_id']}",
    ],
)
def test_not_signed_in_is_401(airflow, path):
    assert requests.get(page(airflow, path), timeout=10).status_code == 401


def test_a_forged_token_is_refused(airflow):
    answer = requests.get(page(airflow, "/connections"), cookies={"_token": "not-a-jwt"}, timeout=10)
    assert answer.status_code == 403


def test_connections_view(airflow, landed):
    answer = airflow.session("viewer").get(page(airflow, "/api/connections"), timeout=10)
    assert answer.status_code == 200, answer.text
    (item,) = answer.json()["connections"]
    with psycopg.connect(landed.database_url) as conn:
        today, week, newest = conn.execute(
            "select count(*) filter (where event_date = (now() at time zone 'UTC')::date),"
            " count(*) filter (where event_date > (now() at time zone 'UTC')::date - 7),"
            " (select max(received_at) from analytics.recent_events where connection_id = %s)"
            " from analytics.product_events where connection_id = %s",
            (landed.connection_id, landed.connection_id),
        ).fetchone()
    assert item["connection_id"] == landed.connection_id and item["org_id"] == ORG
    assert item["webhook_url"].endswith(f"/webhooks/segment/{landed.connection_id}")
    assert landed.secret not in answer.text
    assert (item["events_today"], item["events_7d"]) == (today, week) and week > today > 0
    assert item["last_received_at"] == newest.isoformat()
    assert item["rejected_1h"] == 1 and item["top_reject_reason"]
    assert item["rate_limit_per_minute"] == 600 and item["allowlisted_events"] == 5
    run = answer.json()["last_rollups_run"]
    with psycopg.connect(landed.database_url) as conn:
        staged, events = conn.execute(
            "select (select count(*) from raw.segment_events where received_at <"
            " (select started_at from control.pipeline_runs where run_id = %s)),"
            " (select count(*) from analytics.product_events)",
            (ROLLUPS_RUN,),
        ).fetchone()
    assert (run["run_id"], run["status"], run["staged_rows"]) == (ROLLUPS_RUN, "success", staged)
    assert run["finished_at"] and run["detail"]["marts"]["product_events"] == events
    lag = answer.json()["marts_lag"]  # this run record covers no staged row, so every staged event waits
    with psycopg.connect(landed.database_url) as conn:
        oldest = conn.execute("select extract(epoch from now() - min(loaded_at)) from raw.segment_events").fetchone()[0]
    assert lag["marts_through"] is None and abs(lag["seconds"] - float(oldest)) < 60
    html = airflow.session("viewer").get(page(airflow, "/connections"), timeout=10)
    assert "Marts lag: " in html.text and "the oldest staged event not yet in the marts has waited" in html.text
    assert html.status_code == 200 and landed.connection_id in html.text and "Reconcile" in html.text
    assert f"product_events {events:,}" in html.text
    assert landed.secret not in html.text


def test_debugger_lists_accepted_and_rejected_and_filters(airflow, landed):
    client = airflow.session("viewer")
    data = client.get(page(airflow, f"/api/connections/{landed.connection_id}/debugger"), timeout=10).json()
    assert len(data["accepted"]) == 50
    with psycopg.connect(landed.database_url) as conn:
        newest = conn.execute(
            "select message_id from raw.segment_events where connection_id = %s"
            " order by received_at desc, message_id limit 1",
            (landed.connection_id,),
        ).fetchone()[0]
    assert data["accepted"][0]["message_id"] == newest
    assert any(e["account_id"] == ACCOUNT["account_id"] and e["matched_by"] for e in data["accepted"])
    assert {"received_at", "event_type", "event_name", "in_allowlist", "external_group_id", "external_user_id"} <= set(
        data["accepted"][0]
    )
    (rejected,) = data["rejected"]
    assert rejected["status"] == 401 and rejected["reason"]
    only = client.get(
        page(airflow, f"/api/connections/{landed.connection_id}/debugger"),
        params={"event_name": "Report Created", "show": "accepted"},
        timeout=10,
    ).json()
    assert only["accepted"] and {e["event_name"] for e in only["accepted"]} == {"Report Created"}
    assert only["rejected"] == []
    assert (
        client.get(
            page(airflow, f"/api/connections/{landed.connection_id}/debugger"), params={"show": "rejected"}, timeout=10
        ).json()["accepted"]
        == []
    )
    bad = client.get(
        page(airflow, f"/api/connections/{landed.connection_id}/debugger"), params={"show": "some"}, timeout=10
    )
    assert bad.status_code == 400 and "show must be" in bad.json()["error"]
    unknown = client.get(page(airflow, "/api/connections/conn_nope/debugger"), timeout=10)
    assert unknown.status_code == 400 and "no connection" in unknown.json()["error"]


def test_debugger_sees_an_event_posted_now(airflow, landed):
    event = samples.event("track", user_id="u-new", name="Invite Sent")
    assert landed.post(event).status_code == 200
    data = (
        airflow.session("viewer")
        .get(page(airflow, f"/api/connections/{landed.connection_id}/debugger"), timeout=10)
        .json()
    )
    first = data["accepted"][0]
    assert (first["message_id"], first["event_name"], first["in_allowlist"]) == (
        event["messageId"],
        "Invite Sent",
        False,
    )


def test_account_view(airflow, landed):
    client = airflow.session("viewer")
    answer = client.get(page(airflow, f"/api/accounts/{ORG}/{ACCOUNT['account_id']}"), timeout=10)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    with psycopg.connect(landed.database_url) as conn:
        total = conn.execute(
            "select sum(event_count) from analytics.account_event_daily where org_id = %s"
            " and account_id = %s and event_date > (now() at time zone 'UTC')::date - 30",
            (ORG, ACCOUNT["account_id"]),
        ).fetchone()[0]
        score = conn.execute(
            "select health_score from analytics.account_health where org_id = %s and account_id = %s",
            (ORG, ACCOUNT["account_id"]),
        ).fetchone()[0]
        users = conn.execute(
            "select count(distinct coalesce(user_id, anonymous_id)) from analytics.product_events"
            " where org_id = %s and account_id = %s and event_at > now() - interval '30 days'",
            (ORG, ACCOUNT["account_id"]),
        ).fetchone()[0]
    assert sum(r["event_count"] for r in data["daily"]) == total > 0
    assert len({r["event_date"] for r in data["daily"]}) > 5
    assert data["health"]["health_score"] == float(score)
    components = {c["component"]: c for c in data["components"]}
    assert set(components) == {"activity", "breadth", "users", "recency"}
    assert components["users"]["score"] == pytest.approx(min(1.0, users / components["users"]["target"]), abs=0.002)
    assert data["timeline"] and data["timeline"][0]["event_at"] >= data["timeline"][-1]["event_at"]
    html = client.get(page(airflow, f"/accounts/{ORG}/{ACCOUNT['account_id']}"), timeout=10).text
    assert "<svg" in html and "Report Created" in html
    missing = client.get(page(airflow, f"/accounts/{ORG}/no-such-account"), timeout=10)
    assert missing.status_code == 400 and "no account" in missing.text


def test_account_view_engagement_and_adoption(airflow, landed):
    """The Engagement and Feature adoption blocks equal direct SQL over the marts."""
    client = airflow.session("viewer")
    key = (ORG, ACCOUNT["account_id"])
    data = client.get(page(airflow, f"/api/accounts/{ORG}/{ACCOUNT['account_id']}"), timeout=10).json()
    with psycopg.connect(landed.database_url) as conn:
        window = "org_id = %s and account_id = %s and event_date > (now() at time zone 'UTC')::date - 30"
        sessions, minutes = conn.execute(
            f"select sum(sessions), sum(session_minutes) from analytics.account_engagement_daily where {window}", key
        ).fetchone()
        today = conn.execute(
            "select coalesce(sum(active_users) filter (where event_date = (now() at time zone 'UTC')::date), 0)"
            f" from analytics.account_engagement_daily where {window}",
            key,
        ).fetchone()[0]
        latest = conn.execute(
            "select active_days_7d, active_days_30d from analytics.account_engagement_daily"
            f" where {window} order by event_date desc limit 1",
            key,
        ).fetchone()
        users_7d, users_30d = conn.execute(
            "select count(distinct coalesce(user_id, anonymous_id)) filter"
            " (where event_date > (now() at time zone 'UTC')::date - 7),"
            " count(distinct coalesce(user_id, anonymous_id)) from analytics.product_events"
            f" where {window}",
            key,
        ).fetchone()
        median = conn.execute(
            "select round((percentile_cont(0.5) within group (order by duration_s::float8) / 60)::numeric, 2)"
            " from analytics.sessions where org_id = %s and account_id = %s"
            " and session_date > (now() at time zone 'UTC')::date - 30",
            key,
        ).fetchone()[0]
        newest = conn.execute(
            "select user_key, session_number, event_count from analytics.sessions"
            " where org_id = %s and account_id = %s order by session_start desc, user_key, session_number limit 10",
            key,
        ).fetchall()
        adoption = conn.execute(
            "select feature, users, adopted from analytics.feature_adoption where org_id = %s and account_id = %s",
            key,
        ).fetchall()
    engagement = data["engagement"]
    assert engagement["sessions"] == sessions > 0
    assert float(engagement["session_minutes"]) == float(minutes) > 0
    assert float(engagement["median_session_minutes"]) == float(median)
    assert engagement["active_users_today"] == today
    assert (engagement["active_users_7d"], engagement["active_users_30d"]) == (users_7d, users_30d)
    assert 0 < users_7d <= users_30d
    assert (engagement["active_days_7d"], engagement["active_days_30d"]) == latest
    assert 0 < latest[0] <= 7 and latest[0] <= latest[1] <= 30
    assert [(s["user_key"], s["session_number"], s["event_count"]) for s in data["sessions"]] == newest
    assert len(newest) == 10
    assert sorted((a["feature"], a["users"], a["adopted"]) for a in data["adoption"]) == sorted(adoption)
    assert adoption and any(adopted for _, _, adopted in adoption)
    html = client.get(page(airflow, f"/accounts/{ORG}/{ACCOUNT['account_id']}"), timeout=10).text
    assert 'id="engagement"' in html and 'id="sessions"' in html and 'id="adoption"' in html
    assert f"<b>{sessions}</b>" in html and newest[0][0] in html
    assert all(f"<td>{feature}</td>" in html for feature, _, _ in adoption)
    assert "not built yet" not in html


def test_account_view_without_engagement_marts(airflow, landed):
    """Before the engagement marts exist the account view still renders and says so."""
    client = airflow.session("viewer")
    with psycopg.connect(landed.database_url, autocommit=True) as conn:
        conn.execute("alter table analytics.feature_adoption rename to feature_adoption_hidden")
        try:
            html = client.get(page(airflow, f"/accounts/{ORG}/{ACCOUNT['account_id']}"), timeout=10)
            data = client.get(page(airflow, f"/api/accounts/{ORG}/{ACCOUNT['account_id']}"), timeout=10).json()
        finally:
            conn.execute("alter table analytics.feature_adoption_hidden rename to feature_adoption")
    assert html.status_code == 200 and "<svg" in html.text
    assert "not built yet" in html.text and 'id="adoption"' not in html.text
    assert data["engagement"] is None and data["sessions"] == data["adoption"] == []


def test_identity_and_outbound_views(airflow, landed):
    client = airflow.session("viewer")
    identity = client.get(page(airflow, "/identity"), timeout=10)
    assert identity.status_code == 200 and landed.connection_id in identity.text
    assert "account:groupId-&gt;external_id" in identity.text and "unresolved" in identity.text
    rules = client.get(page(airflow, "/identity/rules"), timeout=10)
    assert "connection_id,chain,position,source,target" in rules.text
    with psycopg.connect(landed.database_url, autocommit=True) as conn:
        conn.execute(
            "insert into control.outbound (connection_id, write_key_enc, region, enabled) values (%s, 'x', 'eu', true)",
            (landed.connection_id,),
        )
        conn.execute(
            "insert into control.outbound_runs (connection_id, started_at, status, sent, skipped_unchanged,"
            " oversized, failed, error) values (%s, now(), 'failed', 3, 4, 1, 2, 'HTTP 401 from Segment')",
            (landed.connection_id,),
        )
    outbound = client.get(page(airflow, "/outbound"), timeout=10).text
    assert "enabled (eu)" in outbound and "HTTP 401 from Segment" in outbound


def test_reconcile_needs_run_permission_and_creates_a_run(airflow, landed):
    path = page(airflow, f"/connections/{landed.connection_id}/reconcile")
    assert requests.post(path, timeout=10).status_code == 401
    assert airflow.session("viewer").post(path, timeout=10).status_code == 403
    answer = airflow.session("user").post(path, headers={"accept": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["dag_run_id"]
    assert answer.json()["url"] == f"/dags/segment_reconcile/runs/{quote(run_id, safe='')}"
    run = requests.get(
        f"{airflow.url}/api/v2/dags/segment_reconcile/dagRuns/{run_id}",
        headers={"Authorization": f"Bearer {airflow.token('admin')}"},
        timeout=10,
    ).json()
    assert run["conf"] == {"connection_id": landed.connection_id} and run["run_type"] == "manual"
    assert run.get("triggering_user_name") in (None, "user")
    log = requests.get(
        f"{airflow.url}/api/v2/eventLogs",
        params={"dag_id": "segment_reconcile"},
        headers={"Authorization": f"Bearer {airflow.token('admin')}"},
        timeout=10,
    ).json()
    assert any(e["owner"] == "user" for e in log["event_logs"])


def test_allowlist_edit_needs_edit_permission(airflow, landed):
    path = page(airflow, f"/connections/{landed.connection_id}/allowlist")
    assert airflow.session("viewer").post(path, data={"add": "Invite Sent"}, timeout=10).status_code == 403
    client = airflow.session("user")
    debugger = client.get(page(airflow, f"/connections/{landed.connection_id}/debugger"), timeout=10).text
    assert '<option value="Invite Sent">' in debugger  # seen in recent events, not allowlisted: suggested
    added = client.post(path, data={"add": "Invite Sent"}, headers={"accept": "application/json"}, timeout=10)
    assert added.status_code == 200 and "Invite Sent" in added.json()["allowlist"]
    removed = client.post(path, data={"remove": "Invite Sent"}, timeout=10, allow_redirects=False)
    assert removed.status_code == 303
    with psycopg.connect(landed.database_url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "select event_name from control.allowlist where connection_id = %s", (landed.connection_id,)
            )
        ]
    assert "Invite Sent" not in names and "Report Created" in names
    bad = client.post(path, data={"add": "x" * 300}, headers={"accept": "application/json"}, timeout=10)
    assert bad.status_code == 400 and "invalid" in bad.json()["error"]


def test_dbt_docs_are_served_by_cosmos_to_signed_in_readers(airflow):
    path = f"{airflow.url}/cosmos/segment_elt/dbt_docs_index.html"
    assert requests.get(path, timeout=10).status_code == 401
    assert requests.get(path, cookies={"_token": "forged"}, timeout=10).status_code == 403
    answer = airflow.session("viewer").get(path, timeout=20)
    assert answer.status_code == 200 and "dbt" in answer.text.lower()
    views = requests.get(
        f"{airflow.url}/api/v2/plugins", headers={"Authorization": f"Bearer {airflow.token('admin')}"}, timeout=10
    ).json()["plugins"]
    cosmos = next(p for p in views if p["name"] == "cosmos")
    assert [v["href"] for v in cosmos["external_views"]] == ["/cosmos/segment_elt/dbt_docs_index.html"]


def privacy_rows(landed, user_id: str) -> tuple[list[tuple], list[tuple]]:
    """(regulations, suppressions) of org acme's `user_id`, found by its keyed hash."""
    with psycopg.connect(landed.database_url) as conn:
        digest = privacy.subject_hash(privacy.hash_key(conn), ORG, user_id)
        regulations = conn.execute(
            "select regulation_type, state, requested_by, subject_enc is not null from control.regulations"
            " where org_id = %s and subject_hash = %s order by regulation_id",
            (ORG, digest),
        ).fetchall()
        suppressions = conn.execute(
            "select regulation_id from control.suppressions where org_id = %s and subject_hash = %s", (ORG, digest)
        ).fetchall()
    return regulations, suppressions


def test_privacy_view_reads_for_viewers_and_refuses_their_form(airflow, landed):
    viewer = airflow.session("viewer")
    html = viewer.get(page(airflow, "/privacy"), timeout=10)
    assert html.status_code == 200 and 'id="suppressed"' in html.text and 'id="regulate"' in html.text
    assert f"<td>{ORG}</td>" in html.text and "segment_privacy" in html.text
    answer = viewer.post(page(airflow, "/privacy"), data={"org_id": ORG, "kind": "suppress", "user_ids": "u-v"})
    assert answer.status_code == 403
    assert privacy_rows(landed, "u-v") == ([], [])


def test_privacy_suppress_unsuppress_and_delete_through_the_form(airflow, landed):
    client = airflow.session("user")
    path = page(airflow, "/privacy")
    user_id = "u-privacy-page-1"
    before = client.get(page(airflow, "/api/privacy"), timeout=10).json()
    suppressed_before = {o["org_id"]: o["suppressed"] for o in before["suppressed"]}[ORG]

    done = client.post(path, data={"org_id": ORG, "kind": "suppress", "user_ids": f"{user_id}\n\n"}, timeout=10)
    assert done.status_code == 200 and 'id="recorded"' in done.text and "SUPPRESS" in done.text  # after the 303
    regulations, suppressions = privacy_rows(landed, user_id)
    assert regulations == [("SUPPRESS", "done", "user", False)] and len(suppressions) == 1
    listed = client.get(page(airflow, "/api/privacy"), timeout=10).json()
    assert {o["org_id"]: o["suppressed"] for o in listed["suppressed"]}[ORG] == suppressed_before + 1
    assert listed["regulations"][0]["requested_by"] == "user"
    assert user_id not in client.get(path, timeout=10).text  # only the keyed hash, shortened

    undone = client.post(
        path, data={"org_id": ORG, "kind": "unsuppress", "user_ids": user_id}, headers={"accept": "application/json"}
    )
    assert undone.status_code == 200 and undone.json()["state"] == "done"
    regulations, suppressions = privacy_rows(landed, user_id)
    assert [r[0] for r in regulations] == ["SUPPRESS", "UNSUPPRESS"] and suppressions == []

    deleted = client.post(
        path,
        data={"org_id": ORG, "kind": "delete", "user_ids": "u-privacy-page-2\nu-privacy-page-3"},
        headers={"accept": "application/json"},
        timeout=10,
    )
    assert (
        deleted.status_code == 200
        and deleted.json()["state"] == "pending"
        and len(deleted.json()["regulation_ids"]) == 2
    )
    for other in ("u-privacy-page-2", "u-privacy-page-3"):
        assert privacy_rows(landed, other) == ([("DELETE_ONLY", "pending", "user", True)], [])
    # the deletion runs in segment_privacy, triggered as the signed-in user through Airflow's REST API
    run_id = deleted.json()["dag_run_id"]
    assert deleted.json()["dag_id"] == "segment_privacy" and run_id and deleted.json()["not_started"] is None
    run = requests.get(
        f"{airflow.url}/api/v2/dags/segment_privacy/dagRuns/{run_id}",
        headers={"Authorization": f"Bearer {airflow.token('admin')}"},
        timeout=10,
    ).json()
    assert run["run_type"] == "manual" and run.get("triggering_user_name") in (None, "user")
    shown = client.get(path, params={"recorded": "1", "kind": "delete", "run_id": run_id}, timeout=10).text
    assert "The deletion is pending" in shown and f"/dags/segment_privacy/runs/{quote(run_id, safe='')}" in shown
    with psycopg.connect(landed.database_url) as conn:  # leave no pending deletion to other tests
        privacy.set_state(conn, deleted.json()["regulation_ids"], "done")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"org_id": "no-such-org", "kind": "suppress", "user_ids": "u-privacy-bad"}, "no org 'no-such-org'"),
        ({"org_id": ORG, "kind": "delete", "user_ids": " \n \n"}, "name at least one userId"),
        ({"org_id": ORG, "kind": "erase-everything", "user_ids": "u-privacy-bad"}, "unknown regulation"),
    ],
)
def test_privacy_bad_input_is_one_line_and_records_nothing(airflow, landed, form, error):
    client = airflow.session("user")
    with psycopg.connect(landed.database_url) as conn:
        (before,) = conn.execute("select count(*) from control.regulations").fetchone()
    answer = client.post(page(airflow, "/privacy"), data=form, headers={"accept": "application/json"}, timeout=10)
    assert answer.status_code == 400 and error in answer.json()["error"]
    assert "\n" not in answer.json()["error"]
    shown = client.post(page(airflow, "/privacy"), data=form, timeout=10)
    assert shown.status_code == 400 and error in unescape(shown.text)
    with psycopg.connect(landed.database_url) as conn:
        (after,) = conn.execute("select count(*) from control.regulations").fetchone()
    assert after == before
