"""The versioned schema holds every table the project keeps state in, dbt's watermarks included:
an install whose dbt runs created segment_meta.watermarks (before migration 10) keeps them."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from segment_elt.control import schema
from segment_elt.ingest import landing, partitions

# What dbt's on-run-start ran before the watermarks moved into the migrations.
DBT_MADE = """
create schema if not exists segment_meta;
create table if not exists segment_meta.watermarks (model text primary key, high_water timestamptz not null);
alter table segment_meta.watermarks add column if not exists relation_oid oid,
    add column if not exists batch_after timestamptz;
create or replace function segment_meta.try_timestamptz(value text)
returns timestamptz language plpgsql immutable as $fn$
begin
    return value::timestamptz;
exception when others then
    return null;
end $fn$;
"""


@pytest.fixture
def blank(pg_server):
    name = f"blank_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    with psycopg.connect(pg_server.url(name), autocommit=True) as conn:
        yield conn


def test_an_install_whose_dbt_made_the_watermarks_keeps_them(blank, monkeypatch):
    with monkeypatch.context() as before:
        before.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] < 10])
        schema.upgrade(blank)
    blank.execute(DBT_MADE)
    blank.execute("create schema analytics; create table analytics.product_events (message_id text)")
    blank.execute("create schema intermediate; create table intermediate.int_identity__resolved_batch (n int)")
    blank.execute(
        "insert into segment_meta.watermarks values"
        " ('product_events', '2026-11-30 10:00+00', null, null),"  # written before watermarks were bound to tables
        " ('int_identity__resolved_batch', '2026-11-30 11:00+00',"
        "  'intermediate.int_identity__resolved_batch'::regclass::oid, '2026-11-30 09:00+00')"
    )
    kept = blank.execute("select model, high_water, batch_after from segment_meta.watermarks order by 1").fetchall()

    assert schema.upgrade(blank) == [version for version, _, _ in schema.MIGRATIONS if version >= 10]
    assert (
        blank.execute("select model, high_water, batch_after from segment_meta.watermarks order by 1").fetchall()
        == kept
    )
    bound = dict(blank.execute("select model, relation_oid from segment_meta.watermarks").fetchall())
    assert bound == {
        "product_events": blank.execute("select 'analytics.product_events'::regclass::oid").fetchone()[0],
        "int_identity__resolved_batch": blank.execute(
            "select 'intermediate.int_identity__resolved_batch'::regclass::oid"
        ).fetchone()[0],
    }
    assert blank.execute("select to_regprocedure('segment_meta.try_timestamptz(text)')").fetchone()[0] is None
    assert schema.upgrade(blank) == []


def test_a_new_install_has_the_watermarks_table_before_dbt_runs(blank):
    schema.upgrade(blank)
    columns = blank.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'segment_meta' and table_name = 'watermarks' order by ordinal_position"
    ).fetchall()
    assert [c for (c,) in columns] == ["model", "high_water", "relation_oid", "batch_after"]


def test_an_old_install_is_partitioned_by_day_without_losing_or_doubling_a_row(blank):
    """Migration 13 on an unpartitioned raw.segment_events with rows of several days: every row and
    column kept once, each day in its partition, and landing keeps deduplicating across days."""
    schema.upgrade(blank, until=12)
    blank.execute(
        """
        insert into raw.segment_events
            (connection_id, org_id, message_id, event_type, received_at, archive_key, payload, loaded_at)
        select
            'c' || (g % 2), 'acme', 'm' || g, 'track', timestamptz '2026-11-20 23:30+00' + g * interval '7 hours',
            'key/' || (g / 3), jsonb_build_object('n', g, 'messageId', 'm' || g),
            timestamptz '2026-11-21' + g * interval '1 minute'
        from generate_series(1, 40) as g
        """
    )
    columns = [
        c
        for (c,) in blank.execute(
            "select column_name from information_schema.columns"
            " where table_schema = 'raw' and table_name = 'segment_events' order by ordinal_position"
        )
    ]
    rows = f"select {', '.join(columns)} from raw.segment_events order by connection_id, message_id"
    before = blank.execute(rows).fetchall()
    reader = f"reader_{uuid.uuid4().hex[:8]}"
    blank.execute(f"create role {reader}; grant usage on schema raw to {reader}")
    blank.execute(f"grant select on raw.segment_events to {reader}")

    assert schema.upgrade(blank) == [version for version, _, _ in schema.MIGRATIONS if version >= 13]
    assert blank.execute(rows).fetchall() == before
    assert blank.execute("select relkind from pg_class where oid = 'raw.segment_events'::regclass").fetchone() == ("p",)
    days = {at.astimezone(dt.UTC).date() for (at,) in blank.execute("select received_at from raw.segment_events")}
    assert days <= set(partitions.days(blank)) and len(days) >= 10
    assert partitions.default_days(blank) == []
    assert blank.execute("select has_table_privilege(%s, 'raw.segment_events', 'select')", (reader,)).fetchone() == (
        True,
    )
    blank.execute(f"drop owned by {reader}; drop role {reader}")
    today = dt.datetime.now(dt.UTC).date()
    assert {today + dt.timedelta(days=n) for n in range(partitions.DAYS_AHEAD + 1)} <= set(partitions.days(blank))

    # a retry of m1 (staged on 2026-11-21) arriving today lands nothing; a new event lands
    new = landing.insert_group(
        blank,
        connection_id="c1",
        org_id="acme",
        archive_key="key/today",
        requests=[
            (
                dt.datetime.now(dt.UTC),
                '[{"messageId": "m1"}, {"messageId": "fresh"}]',
                [{"messageId": "m1"}, {"messageId": "fresh"}],
            )
        ],
    )
    assert new == [1]
    assert blank.execute(
        "select count(*), count(distinct (connection_id, message_id)) from raw.segment_events"
    ).fetchone() == (41, 41)
