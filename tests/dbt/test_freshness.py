"""`dbt source freshness` as segment_rollups runs it: fresh passes, an hour warns, past
SEGMENT_ELT_RAW_STALE_HOURS fails naming the source and its age; an empty table only warns."""

from __future__ import annotations

import pytest

from segment_elt.control import connections
from segment_elt.local import samples
from segment_elt.pipeline import freshness
from tests.dags.test_dag_runs import NOW, land


def raw_age(ages) -> freshness.SourceAge:
    (raw,) = [age for age in ages if age.source == "raw.segment_events"]
    return raw


@pytest.fixture
def acme(db):
    return connections.create(db, "acme")


def landed_hours_ago(db, acme, hours: float) -> None:
    land(db, acme, [samples.event("track", user_id="u1", name="Report Created", at=NOW)], NOW)
    db.execute("update raw.segment_events set loaded_at = now() - make_interval(secs => %s)", (hours * 3600,))


def test_an_empty_raw_table_warns_and_is_not_stale(db):
    raw = raw_age(freshness.check())
    assert (raw.status, raw.age_hours, raw.line) == ("warn", None, "raw.segment_events: no row yet")


def test_fresh_passes_and_an_hour_old_warns_without_failing(db, acme, caplog):
    landed_hours_ago(db, acme, 0.1)
    assert raw_age(freshness.check()).status == "pass"
    db.execute("update raw.segment_events set loaded_at = now() - interval '2 hours'")
    warned = raw_age(freshness.check())
    assert warned.status == "warn" and 1.99 < warned.age_hours < 2.1
    assert "raw.segment_events: newest row landed 2." in caplog.text


def test_past_the_stale_hours_fails_naming_the_source_and_the_setting(db, acme, monkeypatch):
    landed_hours_ago(db, acme, 7)
    with pytest.raises(freshness.SourceStale) as stale:
        freshness.check()
    message = str(stale.value)
    assert message.startswith("raw.segment_events: newest row landed 7.")
    assert "more than SEGMENT_ELT_RAW_STALE_HOURS=6" in message and "is the receiver up?" in message
    monkeypatch.setenv("SEGMENT_ELT_RAW_STALE_HOURS", "8")
    assert raw_age(freshness.check()).status == "warn"


def test_a_run_spares_dbt_while_raw_is_fresh_and_asks_it_otherwise(db, acme):
    from segment_elt.pipeline.transform import run_dbt

    run_dbt(["parse", "--quiet"])  # the manifest the check reads raw's warn_after from
    landed_hours_ago(db, acme, 0.5)
    (fresh,) = freshness.check_for_run(full=False)  # one indexed query: only raw's age
    assert (fresh.source, fresh.status) == ("raw.segment_events", "pass") and 0.49 < fresh.age_hours < 0.6
    assert {age.source for age in freshness.check_for_run(full=True)} >= {"raw.segment_events", "app.accounts"}
    db.execute("update raw.segment_events set loaded_at = now() - interval '2 hours'")
    warned = freshness.check_for_run(full=False)  # past warn_after: dbt's whole check
    assert raw_age(warned).status == "warn" and len(warned) > 1
    db.execute("update raw.segment_events set loaded_at = now() - interval '7 hours'")
    with pytest.raises(freshness.SourceStale):
        freshness.check_for_run(full=False)
