"""The incremental models' state: nothing staged is lost when runs fail for days, a model's table is
dropped or rebuilt, or a model runs by itself; event times far from the arrival fall back to it.

Each test lands events through the real tables, runs real dbt, and compares every mart with the
plain-Python reference (tests/dbt/reference.py) over everything landed.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from segment_elt.pipeline.transform import DbtFailed
from tests.dbt.harness import (
    Loaded,
    copy_project,
    differences,
    fetch_marts,
    write_rules,
)
from tests.dbt.world import AS_OF, World, make_world


def load(db: psycopg.Connection, tmp_path, seed: int = 0) -> tuple[Loaded, list, list]:
    """A random world loaded, its events split into an early and a later half."""
    world = make_world(seed)
    half = len(world.events) // 2
    return Loaded(db, world, copy_project(tmp_path)), world.events[:half], world.events[half:]


def assert_marts_match_reference(loaded: Loaded) -> None:
    diffs = differences(loaded.reference(), fetch_marts(loaded.db))
    assert not diffs, "\n".join(diffs[:25])


def let_days_pass(db: psycopg.Connection, days: int) -> None:
    """As if the runs so far had happened `days` earlier: every time the models recorded moves back."""
    shift = f"interval '{days} days'"
    db.execute(f"update staging.stg_segment__events set batch_at = batch_at - {shift}")
    db.execute(f"update intermediate.int_events__resolution_queue set queued_at = queued_at - {shift}")
    db.execute(f"update segment_meta.watermarks set high_water = high_water - {shift}")


def test_events_staged_while_resolution_failed_for_a_week_reach_the_marts(db, tmp_path):
    loaded, early, later = load(db, tmp_path)
    loaded.land(early, AS_OF - dt.timedelta(days=10))
    loaded.build()
    write_rules(loaded.project, [dict(rule, chain="acount") for rule in loaded.rules], {})
    loaded.land(later, AS_OF - dt.timedelta(days=9))
    with pytest.raises(DbtFailed, match="identity_rule_chains_are_known"):
        loaded.build()  # the queue takes the new events; everything that resolves identity is skipped
    let_days_pass(db, 8)
    write_rules(loaded.project, loaded.rules, {})
    loaded.build()
    assert_marts_match_reference(loaded)


@pytest.mark.parametrize(
    "relation",
    [
        "analytics.product_events",
        "analytics.account_event_daily",
        "analytics.user_traits",
        "intermediate.int_events__resolution_queue",
        "intermediate.int_traits__latest",
        "analytics.sessions",
        "intermediate.int_usage__users",
    ],
)
def test_a_dropped_model_is_rebuilt_from_everything_staged(relation, db, tmp_path):
    loaded, early, later = load(db, tmp_path)
    loaded.land(early, AS_OF - dt.timedelta(days=2))
    loaded.build()
    db.execute(f"drop table {relation} cascade")  # the outbound views are rebuilt too
    loaded.land(later, AS_OF - dt.timedelta(days=1))
    loaded.build()
    assert_marts_match_reference(loaded)


def test_models_run_alone_mark_consumed_only_what_they_wrote(db, tmp_path):
    loaded, early, later = load(db, tmp_path)
    loaded.land(early, AS_OF - dt.timedelta(days=2))
    loaded.build()
    loaded.land(later, AS_OF - dt.timedelta(days=1))
    loaded.build("-s", "stg_segment__events", "int_events__resolution_queue")
    for model in (
        "account_engagement_daily",
        "sessions",
        "int_usage__users",
        "int_usage__daily_users",
        "account_event_daily",
        "user_traits",
        "product_events",
    ):
        loaded.build("-s", model)  # its resolution has not run: it must not take the queue as done
    loaded.build()
    assert_marts_match_reference(loaded)


def test_full_refresh_of_product_events_alone_refuses_a_partial_resolution(db, tmp_path):
    loaded, early, later = load(db, tmp_path)
    loaded.land(early, AS_OF - dt.timedelta(days=2))
    loaded.build()
    loaded.land(later, AS_OF - dt.timedelta(days=1))
    loaded.build()  # the resolution kept is now just the later batch
    with pytest.raises(DbtFailed, match="int_identity__resolved_batch product_events"):
        loaded.build("-s", "product_events", "--full-refresh")
    assert_marts_match_reference(loaded)  # nothing was replaced
    loaded.build("-s", "int_identity__resolved_batch", "product_events", "--full-refresh")
    assert_marts_match_reference(loaded)


def test_event_times_far_from_the_arrival_fall_back_to_it(db, tmp_path):
    world = World(
        connections={"web": "org-a"},
        allowlist=[("web", "Login")],
        rules=[
            {
                "connection_id": "*",
                "chain": "account",
                "position": 1,
                "source": "groupId",
                "target": "account.external_id",
            }
        ],
    )
    loaded = Loaded(db, world, copy_project(tmp_path))
    received = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
    sent = {
        "year-one": "0001-01-01T00:00:00Z",
        "epoch": "1970-01-01T00:00:00Z",
        "far-future": "2099-12-31T23:59:59Z",
        "two-days-ahead": "2026-06-03T12:00:00Z",
        "four-years-late": "2022-06-02T00:00:00Z",
        "hours-ahead": "2026-06-02T06:00:00Z",
    }
    loaded.land(
        [
            ("web", {"type": "track", "event": "Login", "messageId": m, "userId": "u", "timestamp": t})
            for m, t in sent.items()
        ],
        received,
    )
    loaded.build()
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = {r["message_id"]: r for r in cur.execute("select * from analytics.product_events")}
    for message_id in ("year-one", "epoch", "far-future", "two-days-ahead"):
        row = rows[message_id]
        assert row["event_date"] == received.date(), message_id
        assert row["event_at"] - received < dt.timedelta(seconds=1), message_id
        assert row.get("reported_event_at") == dt.datetime.fromisoformat(sent[message_id]), message_id
    for message_id in ("four-years-late", "hours-ahead"):
        row = rows[message_id]
        assert row["event_at"] == row.get("reported_event_at") == dt.datetime.fromisoformat(sent[message_id])
    assert_marts_match_reference(loaded)


def queued(db: psycopg.Connection) -> int:
    return db.execute("select count(*) from intermediate.int_events__resolution_queue").fetchone()[0]


def test_the_queue_keeps_only_what_some_consumer_has_not_consumed(db, tmp_path):
    loaded, early, later = load(db, tmp_path)
    loaded.land(early, AS_OF - dt.timedelta(days=2))
    loaded.build()
    assert queued(db) == 0  # the full build's queue was consumed in the same run, and pruned by it
    loaded.land(later, AS_OF - dt.timedelta(days=1))
    loaded.build("-s", "stg_segment__events", "int_events__resolution_queue")  # no consumer ran
    waiting = queued(db)
    assert waiting >= len(later)
    loaded.build("-s", "int_identity__resolved_batch", "product_events")  # one consumer of three
    assert queued(db) == waiting
    loaded.build()
    assert queued(db) == 0
    assert_marts_match_reference(loaded)
