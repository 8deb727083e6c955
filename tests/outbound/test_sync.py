"""Outbound sync against a stand-in Segment API on loopback and the real PostgreSQL (docs/outbound.md)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from segment_elt.outbound import sync
from tests.outbound.conftest import enable

PROJECT_VERSION = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05}


def fill(db, org="acme", users=("u1", "u2"), health=80):
    for user in users:
        db.execute(
            "insert into analytics.outbound_identify values (%s, %s, %s)",
            (org, user, json.dumps({"account_id": "a1", "account_health_score": health})),
        )
    db.execute(
        "insert into analytics.outbound_group values (%s, 'a1', 'ext-1', %s)",
        (org, json.dumps({"health_score": health})),
    )
    db.execute(
        "insert into analytics.outbound_moments values (%s, 'a1', 'Account Went Quiet', 'a1@2026-01-01', '{}')", (org,)
    )


def run_sync(db):
    return sync.sync_all(**FAST)


def test_first_sync_sends_everything_once_then_nothing(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts)
    first = run_sync(marts)
    assert [c["sent"] for c in first.values()] == [4]
    kinds = sorted(m["type"] for m in segment.messages())
    assert kinds == ["group", "identify", "identify", "track"]
    assert all(m["messageId"].startswith("segment-elt-") for m in segment.messages())
    assert {m["context"]["library"]["version"] for m in segment.messages()} == {PROJECT_VERSION}
    second = run_sync(marts)
    assert [(c["sent"], c["skipped_unchanged"]) for c in second.values()] == [(0, 4)]
    assert len(segment.messages()) == 4


def test_a_trait_change_sends_one_identify(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts)
    run_sync(marts)
    marts.execute(
        "update analytics.outbound_identify set traits = traits || '{\"account_health_score\": 12}'"
        " where user_id = 'u2'"
    )
    run_sync(marts)
    latest = segment.messages()[4:]
    assert [(m["type"], m["userId"], m["traits"]["account_health_score"]) for m in latest] == [("identify", "u2", 12)]


def test_joining_then_leaving_an_audience(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts)
    marts.execute("insert into audiences.power_users values ('acme', 'u1')")
    run_sync(marts)
    joined = [m for m in segment.messages() if m.get("userId") == "u1"]
    assert joined[-1]["traits"]["power_users"] is True
    marts.execute("delete from audiences.power_users")
    run_sync(marts)
    left = [m for m in segment.messages() if m.get("userId") == "u1"]
    assert len(left) == 2 and left[-1]["traits"]["power_users"] is False
    run_sync(marts)
    assert len([m for m in segment.messages() if m.get("userId") == "u1"]) == 2  # false is sent once


def test_eu_region_hits_the_eu_endpoint(marts, segment):
    enable(marts, segment, "acme", "wk-eu", region="eu")
    fill(marts)
    run_sync(marts)
    assert {path for path, _, _ in segment.batches} == {"/eu/v1/batch"}


def test_429_then_200_delivers_once(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts)
    segment.script["wk-1"] = [(429, {"Retry-After": "0"})]
    result = run_sync(marts)
    assert [c["sent"] for c in result.values()] == [4]
    assert len(segment.messages()) == 4


def test_a_500_storm_fails_marks_nothing_and_the_next_run_sends_all(marts, segment):
    cid = enable(marts, segment, "acme", "wk-1")
    fill(marts)
    segment.script["wk-1"] = [(500, {})] * 10
    with pytest.raises(sync.OutboundFailed):
        run_sync(marts)
    assert marts.execute("select count(*) from control.outbound_sent").fetchone()[0] == 0
    assert marts.execute(
        "select status, failed from control.outbound_runs where connection_id = %s", (cid,)
    ).fetchone() == ("failed", 4)
    segment.script["wk-1"] = []
    assert [c["sent"] for c in run_sync(marts).values()] == [4]
    assert len({m["messageId"] for m in segment.messages()}) == 4


def test_401_stops_that_connection_and_others_still_sync(marts, segment):
    bad = enable(marts, segment, "acme", "wk-revoked")
    segment.keys.discard("wk-revoked")
    good = enable(marts, segment, "globex", "wk-2")
    fill(marts, "acme")
    fill(marts, "globex")
    with pytest.raises(sync.OutboundFailed, match=r"401.*write key is wrong or revoked"):
        run_sync(marts)
    runs = dict(marts.execute("select connection_id, status from control.outbound_runs").fetchall())
    assert runs == {bad: "failed", good: "success"}
    assert len(segment.messages("wk-2")) == 4


def test_an_oversized_event_is_skipped_and_reported(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts, users=("u1",))
    marts.execute(
        "insert into analytics.outbound_identify values ('acme', 'huge', %s)", (json.dumps({"blob": "x" * 40_000}),)
    )
    result = run_sync(marts)
    assert [(c["sent"], c["oversized"]) for c in result.values()] == [(3, 1)]
    assert "huge" not in {m.get("userId") for m in segment.messages()}
