"""segment-analytics-python, pointed at a real receiver with `host=`: every call type lands once and
reaches the marts after a rollups build; a wrong write key is refused (the library logs the 401)."""

from __future__ import annotations

import logging

from segment.analytics import Client

from tests.clients.conftest import EVENT_NAMES, build_marts, staged


def test_every_call_lands_once_and_reaches_the_marts(sdk_connection, db):
    url, created = sdk_connection
    errors = []
    client = Client(
        created.write_key,
        host=url,
        on_error=lambda error, batch: errors.append(error),
        upload_interval=0.05,
        max_retries=1,
    )
    sent = [
        client.identify("py-user", {"email": "py@example.com", "plan": "pro"})[1],
        client.track("py-user", "Report Created", {"rows": 3})[1],
        client.group("py-user", "py-group", {"name": "Py Co"})[1],
        client.page("py-user", name="Home")[1],
        client.screen("py-user", name="Dashboard")[1],
        client.alias("py-anon", "py-user")[1],
    ]
    client.flush()
    client.join()
    assert errors == []
    rows = staged(db, created.connection_id)
    assert sorted(rows) == sorted(m["messageId"] for m in sent)  # each once, the library's messageIds kept
    assert {r["type"] for r in rows.values()} == {"identify", "track", "group", "page", "screen", "alias"}
    assert all(r["receivedAt"] and r["originalTimestamp"] for r in rows.values())

    marts = build_marts(db, created.connection_id, "py-user", "py-group")
    assert marts["events"] == sorted(EVENT_NAMES)
    assert marts["user_email"] == "py@example.com" and marts["account_traits"] == {"name": "Py Co"}
    assert marts["daily_events"] == 6


def test_a_wrong_write_key_is_refused_and_lands_nothing(sdk_connection, db, caplog):
    url, created = sdk_connection
    errors = []
    client = Client(
        "not-the-write-key",
        host=url,
        on_error=lambda error, batch: errors.append(error),
        upload_interval=0.05,
        max_retries=0,
    )
    with caplog.at_level(logging.ERROR, logger="segment"):
        client.track("py-user", "Report Created")
        client.flush()
        client.join()
    assert [(e.status, e.code) for e in errors] == [(401, "unauthorized")]
    assert any("401" in record.getMessage() for record in caplog.records)
    assert staged(db, created.connection_id) == {}
