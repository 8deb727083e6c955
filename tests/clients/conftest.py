"""A connection behind a real receiver for Segment's SDKs, and what landed and reached the marts."""

from __future__ import annotations

import pytest

from segment_elt.control import connections
from segment_elt.pipeline.transform import run_dbt

EVENT_NAMES = ["Report Created", "$identify", "$group", "$page", "$screen", "$alias"]


@pytest.fixture
def sdk_connection(db, archive_url, receiver_factory):
    """(receiver base URL, created connection) with every call type on the allowlist."""
    receiver = receiver_factory(workers=1)
    created = connections.create(db, "acme", rate_limit=1_000_000)
    connections.allowlist(db, created.connection_id, add=EVENT_NAMES)
    return receiver.url, created


def staged(db, connection_id: str) -> dict[str, dict]:
    """messageId -> payload of the connection's staged events."""
    return {
        r[0]: r[1]
        for r in db.execute(
            "select message_id, payload from raw.segment_events where connection_id = %s", (connection_id,)
        )
    }


def build_marts(db, connection_id: str, user_id: str, group_id: str) -> dict:
    """Build the models in process (the rollups' dbt build, without its tests) and read back what
    the connection's events became."""
    run_dbt(
        [
            "build",
            "--exclude",
            "resource_type:test",
            "resource_type:unit_test",
            "--select",
            "+product_events +account_event_daily +user_traits +account_traits",
        ]
    )
    events = sorted(
        r[0]
        for r in db.execute(
            "select event_name from analytics.product_events where connection_id = %s", (connection_id,)
        )
    )
    email = db.execute("select email from analytics.user_traits where user_id = %s", (user_id,)).fetchone()
    traits = db.execute(
        "select traits from analytics.account_traits where external_group_id = %s", (group_id,)
    ).fetchone()
    daily = db.execute(
        "select coalesce(sum(event_count), 0) from analytics.account_event_daily where org_id = 'acme'"
    ).fetchone()[0]
    return {
        "events": events,
        "user_email": email and email[0],
        "account_traits": traits and traits[0],
        "daily_events": daily,
    }
