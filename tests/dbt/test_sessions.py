"""analytics.sessions across runs (docs/tables.md#sessions): a session straddling two runs, late
calls days later that merge two sessions or start one between two, numbers that keep counting
and move with them, calls that stitching moves from one user to another, and the gap var. After
every run the mart equals the reference model, and a --full-refresh gives the same rows."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from segment_elt.pipeline.transform import DbtFailed, run_dbt
from tests.dbt.harness import Loaded, copy_project, differences, fetch_marts
from tests.dbt.world import AS_OF, World

DAY = AS_OF - dt.timedelta(days=10)


def sessions_world() -> World:
    world = World(
        connections={"web": "org-a"},
        allowlist=[("web", "Report Created"), ("web", "$page")],
    )
    world.accounts = [
        dict(
            org_id="org-a",
            account_id="acme",
            name="Acme",
            external_id="acme-ext",
            ps_id=None,
            vitally_id=None,
            traits={},
        )
    ]
    world.rules = [dict(connection_id="*", chain="account", position=1, source="groupId", target="account.external_id")]
    return world


def at(minutes: float) -> str:
    return (DAY + dt.timedelta(minutes=minutes)).isoformat()


def report(message_id: str, minutes: float, **ids) -> tuple[str, dict]:
    ids = ids or {"userId": "ada"}
    return "web", {"type": "track", "event": "Report Created", "messageId": message_id, "timestamp": at(minutes), **ids}


def page(message_id: str, minutes: float, name: str, **ids) -> tuple[str, dict]:
    ids = ids or {"userId": "ada"}
    return "web", {
        "type": "page",
        "messageId": message_id,
        "timestamp": at(minutes),
        "name": name,
        "properties": {"name": name, "path": "/" + name.lower()},
        **ids,
    }


def identify(message_id: str, minutes: float, user_id: str, anonymous_id: str) -> tuple[str, dict]:
    return "web", {
        "type": "identify",
        "messageId": message_id,
        "timestamp": at(minutes),
        "userId": user_id,
        "anonymousId": anonymous_id,
    }


def spans(db, user_key: str) -> list[tuple]:
    """(number, start minute, end minute, calls) of a user's sessions."""
    rows = db.execute(
        "select session_number, session_start, session_end, event_count from analytics.sessions"
        " where user_key = %s order by session_number",
        (user_key,),
    ).fetchall()

    def minute(t):
        return round((t - DAY).total_seconds() / 60, 3)

    return [(n, minute(start), minute(end), count) for n, start, end, count in rows]


def run(loaded: Loaded, batch: list[tuple[str, dict]], days_later: float) -> None:
    loaded.land(batch, DAY + dt.timedelta(days=days_later))
    loaded.build()
    diffs = differences(loaded.reference(), fetch_marts(loaded.db))
    assert not diffs, "\n".join(diffs[:25])


def test_late_calls_merge_split_and_renumber_sessions_across_runs(db, tmp_path):
    loaded = Loaded(db, sessions_world(), copy_project(tmp_path))
    run(loaded, [page("p1", 0, "Dashboard"), report("r1", 20, groupId="acme-ext", userId="ada")], 0.5)
    assert spans(db, "ada") == [(1, 0, 20, 2)]

    # the same session goes on in the next run (the batch-boundary case), and a second one starts
    run(loaded, [report("r2", 45), report("r3", 105), report("r4", 300)], 0.6)
    assert spans(db, "ada") == [(1, 0, 45, 3), (2, 105, 105, 1), (3, 300, 300, 1)]

    # days later: a call 30 minutes after r2 and before r3 merges sessions 1 and 2 (a gap of
    # exactly the gap stays in the session), and one between 2 and 3 starts a session of its own
    run(loaded, [report("late-1", 75), report("late-2", 200)], 3)
    assert spans(db, "ada") == [(1, 0, 105, 5), (2, 200, 200, 1), (3, 300, 300, 1)]

    # a call that closes the gap between sessions 2 and 3 merges them; numbers shrink back
    run(loaded, [report("late-3", 225), report("late-4", 250), report("late-5", 275)], 4)
    assert spans(db, "ada") == [(1, 0, 105, 5), (2, 200, 300, 5)]

    # a call just after midnight, days late, extends the session started the evening before: the
    # day before changes (its session minutes), though the late call is of the day after
    run(loaded, [report("evening", 700)], 4.5)
    run(loaded, [report("after-midnight", 725)], 6)
    assert spans(db, "ada")[-1] == (3, 700, 725, 2)

    sessions = fetch_marts(db)["sessions"]
    assert sessions[("org-a", "ada", 1)]["first_name"] == "Dashboard"
    assert sessions[("org-a", "ada", 1)]["account_id"] == "acme"  # its first call that resolved
    assert sessions[("org-a", "ada", 1)]["duration_s"] == 105 * 60
    incremental = fetch_marts(db)
    loaded.build("--full-refresh")
    assert fetch_marts(db) == incremental


def test_calls_stitching_moves_leave_the_old_users_sessions(db, tmp_path):
    loaded = Loaded(db, sessions_world(), copy_project(tmp_path))
    visit = [page("v1", 0, "Pricing", anonymousId="device-1"), page("v2", 10, "Signup", anonymousId="device-1")]
    run(loaded, [*visit, identify("login-bob", 60, "bob", "device-1"), report("b1", 35, userId="bob")], 0.5)
    assert spans(db, "bob") == [(1, 0, 35, 3)]

    # an earlier login on the same device arrives late: the first link wins, the visit is Ada's now
    run(loaded, [identify("login-ada", 5, "ada", "device-1")], 3)
    assert spans(db, "bob") == [(1, 35, 35, 1)]
    assert spans(db, "ada") == [(1, 0, 10, 2)]
    assert spans(db, "device-1") == []
    incremental = fetch_marts(db)
    loaded.build("--full-refresh")
    assert fetch_marts(db) == incremental


def test_the_gap_is_a_var(db, tmp_path):
    loaded = Loaded(db, sessions_world(), copy_project(tmp_path))
    loaded.land([report("r1", 0), report("r2", 20), report("r3", 45)], DAY + dt.timedelta(days=1))

    def build(gap):
        return run_dbt(
            ["build", "--vars", json.dumps({"as_of": AS_OF.isoformat(), "session_gap_minutes": gap})],
            project_dir=loaded.project,
        )

    build(15)
    assert spans(db, "ada") == [(1, 0, 0, 1), (2, 20, 20, 1), (3, 45, 45, 1)]
    with pytest.raises(DbtFailed, match="session_gap_minutes must be a whole number of minutes"):
        build("half an hour")
