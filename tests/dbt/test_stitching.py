"""Anonymous-to-known stitching (docs/identity.md#anonymous-users): a visitor's events before
login, sent with only an anonymousId, resolve through the user an identify later links them to,
in the run that stages the identify, and count once as that user; the same anonymousId in
another org stays its own; a later login of someone else on the same device changes nothing."""

from __future__ import annotations

import datetime as dt

from tests.dbt.harness import Loaded, copy_project, fetch_marts
from tests.dbt.world import AS_OF, World

DAY = AS_OF - dt.timedelta(days=3)


def stitching_world() -> World:
    world = World(
        connections={"web-a": "org-a", "web-b": "org-b"},
        allowlist=[("web-a", "Report Created"), ("web-b", "Report Created")],
    )
    world.accounts = [
        dict(org_id=org, account_id="acme", name="Acme", external_id="acme-ext", ps_id=None, vitally_id=None, traits={})
        for org in ("org-a", "org-b")
    ]
    world.rules = [dict(connection_id="*", chain="account", position=1, source="groupId", target="account.external_id")]
    return world


def call(name: str, message_id: str, hours: float, **fields) -> tuple[str, dict]:
    return name, {"messageId": message_id, "timestamp": (DAY + dt.timedelta(hours=hours)).isoformat(), **fields}


def report(name: str, message_id: str, hours: float, **ids) -> tuple[str, dict]:
    return call(name, message_id, hours, type="track", event="Report Created", **ids)


def test_events_before_login_take_the_user_and_count_once(db, tmp_path):
    loaded = Loaded(db, stitching_world(), copy_project(tmp_path))
    loaded.land(
        [
            report("web-a", "before-1", 1, anonymousId="device-1"),
            report("web-a", "before-2", 2, anonymousId="device-1"),
            report("web-b", "other-org", 2, anonymousId="device-1"),
            call("web-a", "joined", 0, type="group", userId="ada", groupId="acme-ext"),
            report("web-a", "after", 5, userId="ada"),
        ],
        DAY + dt.timedelta(hours=6),
    )
    loaded.build()
    assert daily(db) == {("org-a", None): (2, 1), ("org-a", "acme"): (1, 1), ("org-b", None): (1, 1)}

    loaded.land(
        [call("web-a", "login", 3, type="identify", userId="ada", anonymousId="device-1")], DAY + dt.timedelta(hours=7)
    )
    loaded.build()
    events = fetch_marts(db)["product_events"]
    stitched = {events[(loaded.ids["web-a"], m)]["user_id"] for m in ("before-1", "before-2")}
    assert stitched == {"ada"}
    assert {events[(loaded.ids["web-a"], m)]["account_id"] for m in ("before-1", "before-2")} == {"acme"}
    assert events[(loaded.ids["web-b"], "other-org")]["user_id"] is None  # never across orgs
    assert daily(db) == {("org-a", "acme"): (3, 1), ("org-b", None): (1, 1)}

    loaded.land(
        [
            call("web-a", "someone-else", 8, type="identify", userId="bob", anonymousId="device-1"),
            report("web-a", "before-3", 4, anonymousId="device-1"),
        ],
        DAY + dt.timedelta(hours=9),
    )
    loaded.build()
    events = fetch_marts(db)["product_events"]
    assert {events[(loaded.ids["web-a"], m)]["user_id"] for m in ("before-1", "before-2", "before-3")} == {"ada"}
    incremental = fetch_marts(db)
    loaded.build("--full-refresh")
    assert fetch_marts(db) == incremental


def daily(db) -> dict[tuple, tuple[int, int]]:
    """(org, account) -> (events, unique users) of the Report Created day."""
    rows = fetch_marts(db)["account_event_daily"].values()
    return {
        (r["org_id"], r["account_id"]): (r["event_count"], r["unique_users"])
        for r in rows
        if r["event_name"] == "Report Created"
    }


def test_an_older_link_arriving_late_moves_the_events_and_both_users_traits_follow(db, tmp_path):
    loaded = Loaded(db, stitching_world(), copy_project(tmp_path))
    loaded.land(
        [
            call("web-a", "joined", 0, type="group", userId="ada", groupId="acme-ext"),
            call("web-a", "ada-login", 3, type="identify", userId="ada", anonymousId="device-1"),
            report("web-a", "visit", 6, anonymousId="device-1"),
        ],
        DAY + dt.timedelta(hours=7),
    )
    loaded.build()
    assert users(db) == {"ada": "acme"}

    loaded.land(
        [call("web-a", "carol-login", 1, type="identify", userId="carol", anonymousId="device-1")],
        DAY + dt.timedelta(hours=8),
    )
    loaded.build()
    assert fetch_marts(db)["product_events"][(loaded.ids["web-a"], "visit")]["user_id"] == "carol"
    assert users(db) == {"ada": None, "carol": None}
    assert daily(db) == {("org-a", None): (1, 1)}


def users(db) -> dict[str, str | None]:
    """user_id -> account_id of user_traits."""
    return {r["user_id"]: r["account_id"] for r in fetch_marts(db)["user_traits"].values()}
