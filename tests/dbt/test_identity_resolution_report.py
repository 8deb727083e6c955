"""The identity resolution report (identity_resolution_report, identity_unresolved_values) is what
product_events says, after every incremental run, a reconcile and a --full-refresh alike.

The expectation is computed here in Python from analytics.product_events (itself checked against
the reference in test_marts_match_reference.py), so each test reads as the report's definition.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import defaultdict

import psycopg

from segment_elt.control import entities
from segment_elt.pipeline.transform import run_dbt
from segment_elt.settings import settings
from tests.dbt.harness import VARS, Loaded, copy_project
from tests.dbt.world import AS_OF, make_world

REPORTS = ("identity_resolution_report", "identity_unresolved_values")
LOOKED_UP = {"groupId": "external_group_id", "userId": "user_id", "email": "email"}


def expected(db: psycopg.Connection) -> dict[str, dict]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        events = cur.execute("select * from analytics.product_events").fetchall()
    by_rule: dict[tuple, list] = defaultdict(list)
    unresolved: dict[tuple, list] = defaultdict(list)
    for e in events:
        day = (e["org_id"], e["connection_id"], e["event_date"])
        by_rule[(*day, e["matched_by"] or "unresolved")].append(e)
        for kind, column in LOOKED_UP.items():
            if e["matched_by"] is None and e[column] is not None:
                unresolved[(*day, kind, e[column])].append(e)
    return {
        "identity_resolution_report": {
            key: (len(rows), len({r["user_id"] or r["anonymous_id"] for r in rows} - {None}))
            for key, rows in by_rule.items()
        },
        "identity_unresolved_values": {
            key: (len(rows), max(r["event_at"] for r in rows)) for key, rows in unresolved.items()
        },
    }


def actual(db: psycopg.Connection) -> dict[str, dict]:
    return {
        "identity_resolution_report": {
            tuple(row[:4]): tuple(row[4:])
            for row in db.execute(
                "select org_id, connection_id, event_date, matched_by, event_count, unique_users"
                " from analytics.identity_resolution_report"
            )
        },
        "identity_unresolved_values": {
            tuple(row[:5]): tuple(row[5:])
            for row in db.execute(
                "select org_id, connection_id, event_date, kind, value, event_count, last_seen_at"
                " from analytics.identity_unresolved_values"
            )
        },
    }


def with_default_rules(db: psycopg.Connection, tmp_path, seed: int = 0) -> Loaded:
    """A random world resolved by the shipped default chain (groupId -> external_id first)."""
    loaded = Loaded(db, make_world(seed), copy_project(tmp_path))
    shutil.copy(settings().dbt_project_dir / "seeds" / "identity_rules.csv", loaded.project / "seeds")
    return loaded


def test_the_report_follows_incremental_runs_a_reconcile_and_a_full_refresh(db, tmp_path):
    loaded = with_default_rules(db, tmp_path)
    events = loaded.world.events
    thirds = [
        events[: len(events) // 3],
        events[len(events) // 3 : 2 * len(events) // 3],
        events[2 * len(events) // 3 :],
    ]
    for n, chunk in enumerate(thirds[:2]):
        loaded.land(chunk, AS_OF - dt.timedelta(days=3 - n))
        loaded.build()
        assert actual(db) == expected(db), f"after batch {n + 1}"

    # an analyst imports the account behind the most frequent unresolved groupId and reconciles
    org, connection_id, group_id = db.execute(
        "select org_id, connection_id, value from analytics.identity_unresolved_values where kind = 'groupId'"
        " group by 1, 2, 3 order by sum(event_count) desc, 3 limit 1"
    ).fetchone()
    entities.upsert(db, org, entities.ACCOUNTS, [{"account_id": "imported", "external_id": group_id}])
    # the import concerns every connection of the org that carried the groupId: reconcile each, so
    # that product_events (and the report) then equal a full rebuild
    for (each,) in db.execute("select connection_id from control.connections where org_id = %s order by 1", (org,)):
        run_dbt(
            ["build", "--vars", json.dumps({**json.loads(VARS), "reconcile_connection_id": each})],
            project_dir=loaded.project,
        )
    assert actual(db) == expected(db), "after the reconcile"
    assert (
        db.execute(
            "select count(*) from analytics.identity_unresolved_values"
            " where connection_id = %s and kind = 'groupId' and value = %s",
            (connection_id, group_id),
        ).fetchone()[0]
        == 0
    )
    assert (
        db.execute(
            "select sum(event_count) from analytics.identity_resolution_report"
            " where connection_id = %s and matched_by = 'account:groupId->external_id'",
            (connection_id,),
        ).fetchone()[0]
        > 0
    )

    loaded.land(thirds[2], AS_OF - dt.timedelta(days=1))
    loaded.build()
    incremental = actual(db)
    assert incremental == expected(db), "after batch 3"
    loaded.build("--full-refresh")
    assert actual(db) == incremental


def test_a_run_that_skips_the_report_leaves_it_the_days_it_missed(db, tmp_path):
    loaded = with_default_rules(db, tmp_path)
    half = len(loaded.world.events) // 2
    loaded.land(loaded.world.events[:half], AS_OF - dt.timedelta(days=2))
    loaded.build()
    loaded.land(loaded.world.events[half:], AS_OF - dt.timedelta(days=1))
    loaded.build("--exclude", *REPORTS)  # e.g. the report's models failed: the queue must keep their days
    loaded.build()
    assert actual(db) == expected(db)
