"""Two rules of one connection and chain at the same position: resolution still follows one
documented total order (chain, position, rule name in byte order), in an incremental run and in
a --full-refresh alike, whatever order the rows have in the seed."""

from __future__ import annotations

import datetime as dt

from tests.dbt.harness import Loaded, copy_project, fetch_marts
from tests.dbt.world import ALLOW_TIED_POSITIONS, AS_OF, World


def tied_world() -> World:
    world = World(connections={"c": "org-a"}, allowlist=[("c", "Login")])
    world.accounts = [
        dict(org_id="org-a", account_id="by-ps", name="PS", external_id=None, ps_id="g-1", vitally_id=None, traits={}),
        dict(
            org_id="org-a", account_id="by-ext", name="Ext", external_id="g-1", ps_id=None, vitally_id=None, traits={}
        ),
    ]
    # ps_id first in the file: the tie is broken by rule name, so external_id wins all the same
    world.rules = [
        dict(connection_id="c", chain="account", position=1, source="groupId", target="account.ps_id"),
        dict(connection_id="c", chain="account", position=1, source="groupId", target="account.external_id"),
    ]
    return world


def event(n: int, at: dt.datetime) -> tuple[str, dict]:
    return "c", {
        "type": "track",
        "event": "Login",
        "messageId": f"m-{n}",
        "userId": f"u-{n}",
        "groupId": "g-1",
        "timestamp": at.isoformat(),
    }


def test_tied_positions_resolve_by_rule_name_incrementally_and_in_a_rebuild(db, tmp_path):
    loaded = Loaded(db, tied_world(), copy_project(tmp_path))
    for batch in range(2):
        at = AS_OF - dt.timedelta(days=2 - batch)
        loaded.land([event(batch * 10 + i, at) for i in range(10)], at)
        loaded.build(*ALLOW_TIED_POSITIONS)
    incremental = fetch_marts(db)["product_events"]
    assert {(row["account_id"], row["matched_by"]) for row in incremental.values()} == {
        ("by-ext", "account:groupId->external_id")
    }
    loaded.build("--full-refresh", *ALLOW_TIED_POSITIONS)
    assert fetch_marts(db)["product_events"] == incremental
