"""Versioned schema of the control, landing and app tables (`segment-elt db upgrade`).

Each migration runs once, in order, in one transaction, under an advisory lock so that
concurrent upgrades (several containers starting at once) are safe. Never edit a migration
that has shipped: append a new one.
"""

from __future__ import annotations

import psycopg

from segment_elt import db

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "control, landing and app tables; per-org token bucket",
        r"""
create schema if not exists control;
create schema if not exists raw;
create schema if not exists app;

create table control.orgs (
    org_id text primary key check (org_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    rate_limit_per_minute integer not null default 600 check (rate_limit_per_minute > 0),
    created_at timestamptz not null default now()
);

create table control.connections (
    connection_id text primary key,
    org_id text not null references control.orgs (org_id),
    name text,
    secret_enc text not null,              -- Fernet token of the shared secret, never plain text
    created_at timestamptz not null default now(),
    deleted_at timestamptz
);
create index connections_org_idx on control.connections (org_id);

create table control.allowlist (
    connection_id text not null references control.connections (connection_id),
    event_name text not null,
    added_at timestamptz not null default now(),
    primary key (connection_id, event_name)
);

create table control.outbound (
    connection_id text primary key references control.connections (connection_id),
    write_key_enc text not null,           -- Fernet token of the Segment write key
    region text not null check (region in ('us', 'eu')),
    enabled boolean not null default true,
    updated_at timestamptz not null default now()
);

-- Token bucket per org (docs/receiver.md#rate-limit), shared by every receiver process and host.
create table control.rate_buckets (
    org_id text primary key references control.orgs (org_id),
    tokens double precision not null,
    updated_at timestamptz not null
);

create table raw.segment_events (
    connection_id text not null,
    org_id text not null,
    message_id text not null,
    event_type text,
    received_at timestamptz not null,      -- when the receiver got the request
    archive_key text not null,             -- the archive object holding the exact request body
    payload jsonb not null,
    loaded_at timestamptz not null default now(),  -- when the row reached staging (replays too)
    primary key (connection_id, message_id)
);
create index segment_events_loaded_at_idx on raw.segment_events (loaded_at);
create index segment_events_received_at_idx on raw.segment_events (received_at);

create table app.accounts (
    account_id text not null,
    org_id text not null,
    name text,
    external_id text,
    ps_id text,
    vitally_id text,
    traits jsonb not null default '{}'::jsonb,
    updated_at timestamptz not null default now(),
    primary key (org_id, account_id)
);

create table app.contacts (
    contact_id text not null,
    org_id text not null,
    account_id text,
    email text,
    product_external_user_id text,
    traits jsonb not null default '{}'::jsonb,
    updated_at timestamptz not null default now(),
    primary key (org_id, contact_id)
);

-- Take `p_events` tokens from the bucket of the connection's org, atomically.
-- outcome: 'ok' (taken), 'limited' (retry_after_s = seconds until it would be taken),
-- 'gone' (unknown or deleted connection). A request larger than the whole cap is taken
-- when the bucket is full, leaving it in debt.
create function control.take_tokens(p_connection_id text, p_events integer)
returns table (outcome text, org_id text, retry_after_s double precision)
language plpgsql as $$
declare
    v_org text;
    v_cap double precision;
    v_tokens double precision;
    v_at timestamptz;
    v_now timestamptz := clock_timestamp();
begin
    select c.org_id, o.rate_limit_per_minute into v_org, v_cap
      from control.connections as c
      join control.orgs as o on o.org_id = c.org_id
     where c.connection_id = p_connection_id and c.deleted_at is null;
    if not found then
        return query select 'gone'::text, null::text, null::double precision;
        return;
    end if;
    select b.tokens, b.updated_at into v_tokens, v_at
      from control.rate_buckets as b where b.org_id = v_org for update;
    if not found then
        insert into control.rate_buckets as b (org_id, tokens, updated_at)
        values (v_org, v_cap, v_now)
        on conflict on constraint rate_buckets_pkey do nothing;
        select b.tokens, b.updated_at into v_tokens, v_at
          from control.rate_buckets as b where b.org_id = v_org for update;
    end if;
    v_tokens := least(v_cap, v_tokens + greatest(0, extract(epoch from v_now - v_at)) * v_cap / 60.0);
    if v_tokens >= p_events or v_tokens >= v_cap then
        update control.rate_buckets as b set tokens = v_tokens - p_events, updated_at = v_now
         where b.org_id = v_org;
        return query select 'ok'::text, v_org, 0::double precision;
    else
        return query select 'limited'::text, v_org,
            (least(p_events::double precision, v_cap) - v_tokens) * 60.0 / v_cap;
    end if;
end $$;

-- Give back the tokens of a request that could not land (503), so a retry is not refused.
create function control.refund_tokens(p_org_id text, p_events integer)
returns void language sql as $$
    update control.rate_buckets as b
       set tokens = least(o.rate_limit_per_minute, b.tokens + p_events)
      from control.orgs as o
     where b.org_id = p_org_id and o.org_id = b.org_id
$$;
""",
    ),
    (
        2,
        "pipeline runs: the rollups DAG's watermark and per-run figures",
        r"""
create table control.pipeline_runs (
    dag_id text not null,
    run_id text not null,
    run_type text not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    status text not null default 'running' check (status in ('running', 'success', 'failed', 'skipped')),
    high_water timestamptz,                -- newest staged loaded_at this run covered
    staged_rows bigint,                    -- rows staged since the previous success
    dbt_vars jsonb not null default '{}'::jsonb,
    detail jsonb not null default '{}'::jsonb,
    primary key (dag_id, run_id, started_at)
);
create index pipeline_runs_success_idx on control.pipeline_runs (dag_id, finished_at) where status = 'success';
""",
    ),
    (
        3,
        "outbound sync: what Segment accepted, and per-run counts",
        r"""
create table control.outbound_sent (
    connection_id text not null references control.connections (connection_id),
    kind text not null check (kind in ('identify', 'group', 'track')),
    key text not null,                     -- user id, account id or moment occurrence
    payload jsonb not null,                -- the message Segment accepted
    message_id text not null,
    sent_at timestamptz not null default now(),
    primary key (connection_id, kind, key)
);

create table control.outbound_runs (
    connection_id text not null references control.connections (connection_id),
    started_at timestamptz not null,
    finished_at timestamptz not null default now(),
    status text not null check (status in ('success', 'failed')),
    sent integer not null,
    skipped_unchanged integer not null,
    oversized integer not null,
    failed integer not null,
    error text
);
create index outbound_runs_idx on control.outbound_runs (connection_id, started_at);
""",
    ),
    (
        4,
        "outbound runs: messages skipped, counted per reason",
        r"""
alter table control.outbound_runs add column skipped jsonb not null default '{}'::jsonb;
""",
    ),
    (
        5,
        "connection secret rotation: the previous secret verifies until a time",
        r"""
alter table control.connections
    add column previous_secret_enc text,            -- Fernet token of the secret before the last rotation
    add column previous_secret_until timestamptz;   -- it verifies until then (or `rotate-secret --finish`)
""",
    ),
    (
        6,
        "the rejects log: the newest refusals per connection",
        r"""
create table control.rejects (
    connection_id text not null references control.connections (connection_id),
    rejected_at timestamptz not null default clock_timestamp(),
    status smallint not null,
    reason text not null,
    body_bytes integer not null,
    body_head text,                        -- 400s only: the body's first 1 KB
    repeats integer not null default 1     -- identical refusals this row stands for (folded within a second)
);
create index rejects_newest_idx on control.rejects (connection_id, rejected_at desc);
""",
    ),
    (
        7,
        "group commit: one token take for the requests of a group",
        r"""
drop function control.take_tokens(text, integer);

-- take_tokens for each of a group's requests in order, under one lock of the org's bucket:
-- exactly what as many take_tokens calls one after the other would answer.
create function control.take_tokens_each(p_connection_id text, p_events integer[])
returns table (n integer, outcome text, retry_after_s double precision)
language plpgsql as $$
declare
    v_org text;
    v_cap double precision;
    v_tokens double precision;
    v_at timestamptz;
    v_now timestamptz;
begin
    select c.org_id, o.rate_limit_per_minute into v_org, v_cap
      from control.connections as c
      join control.orgs as o on o.org_id = c.org_id
     where c.connection_id = p_connection_id and c.deleted_at is null;
    if not found then
        return query select g.n::integer, 'gone'::text, null::double precision
                       from generate_series(1, cardinality(p_events)) as g (n);
        return;
    end if;
    select b.tokens, b.updated_at into v_tokens, v_at
      from control.rate_buckets as b where b.org_id = v_org for update;
    if not found then
        insert into control.rate_buckets as b (org_id, tokens, updated_at)
        values (v_org, v_cap, clock_timestamp())
        on conflict on constraint rate_buckets_pkey do nothing;
        select b.tokens, b.updated_at into v_tokens, v_at
          from control.rate_buckets as b where b.org_id = v_org for update;
    end if;
    -- the clock is read once the bucket is locked: read before, it could be older than the
    -- updated_at of a take that held the lock meanwhile, and that time would be refilled twice
    v_now := greatest(clock_timestamp(), v_at);
    v_tokens := least(v_cap, v_tokens + extract(epoch from v_now - v_at) * v_cap / 60.0);
    for i in 1 .. cardinality(p_events) loop
        n := i;
        if v_tokens >= p_events[i] or v_tokens >= v_cap then
            v_tokens := v_tokens - p_events[i];
            outcome := 'ok';
            retry_after_s := 0;
        else
            outcome := 'limited';
            retry_after_s := (least(p_events[i]::double precision, v_cap) - v_tokens) * 60.0 / v_cap;
        end if;
        return next;
    end loop;
    update control.rate_buckets as b set tokens = v_tokens, updated_at = v_now where b.org_id = v_org;
end $$;
""",
    ),
    (
        8,
        "tracking API write keys: one per connection, found by its digest",
        r"""
alter table control.connections
    add column write_key_enc text,         -- Fernet token of the tracking API write key
    add column write_key_sha256 text;      -- hex SHA-256 of the write key: how a tracking request finds its connection
create unique index connections_write_key_idx on control.connections (write_key_sha256);
""",
    ),
    (
        9,
        "dbt builds of the DAG runs and each node's result, for per-model status, retries and the page",
        r"""
create table control.dbt_builds (
    dag_id text not null,
    run_id text not null,
    try_number integer not null,
    started_at timestamptz not null default clock_timestamp(),
    finished_at timestamptz,
    state text not null default 'running' check (state in ('running', 'success', 'failed')),
    selected text[],                       -- the nodes a retry rebuilt; null: the whole project
    summary text,                          -- the last line: what failed, with dbt's message
    primary key (dag_id, run_id, try_number)
);
create table control.dbt_node_results (
    dag_id text not null,
    run_id text not null,
    try_number integer not null,
    unique_id text not null,               -- dbt's: model.segment_elt.product_events
    status text not null,                  -- running, success, pass, warn, error, fail, skipped
    message text,                          -- dbt's, with the lines the node logged (a check's bad rows)
    started_at timestamptz,
    finished_at timestamptz,
    execution_s double precision,
    rows_affected bigint,
    primary key (dag_id, run_id, try_number, unique_id),
    foreign key (dag_id, run_id, try_number) references control.dbt_builds on delete cascade
);
""",
    ),
    (
        10,
        "the dbt models' watermarks, versioned here instead of in dbt's on-run-start",
        r"""
-- An install whose dbt runs created this table keeps it and every watermark in it.
create schema if not exists segment_meta;
create table if not exists segment_meta.watermarks (
    model text primary key,
    high_water timestamptz not null
);
alter table segment_meta.watermarks
    add column if not exists relation_oid oid,
    add column if not exists batch_after timestamptz;
comment on table segment_meta.watermarks is
'How far each incremental dbt model has consumed its input (dbt_project/macros/meta.sql).';
comment on column segment_meta.watermarks.relation_oid is
'The oid of the table the watermark belongs to; it counts only while that table exists.';
comment on column segment_meta.watermarks.batch_after is
'For int_identity__resolved_batch: the queue position its batch starts after (-infinity: everything).';
-- watermarks written before they were bound to tables belong to the table of that name there now
update segment_meta.watermarks
set relation_oid = (
    select min(tables.oid) from pg_class as tables
    where tables.relname = watermarks.model and tables.relkind = 'r'
    having count(*) = 1
)
where relation_oid is null;
drop function if exists segment_meta.try_timestamptz(text);  -- made by the old on-run-start, never used
""",
    ),
    (
        12,
        "privacy: regulations (erasure and suppression), suppressed people, the keyed-hash key",
        r"""
-- The key people's ids are hashed with (HMAC-SHA256), random, stored Fernet-encrypted: a key
-- rotation of SEGMENT_ELT_FERNET_KEY re-encrypts it and the hashes stay valid.
create table control.privacy_key (
    singleton boolean primary key default true check (singleton),
    key_enc text not null
);

create table control.regulations (
    regulation_id bigint generated always as identity primary key,
    org_id text not null references control.orgs (org_id),
    regulation_type text not null
        check (regulation_type in ('DELETE_ONLY', 'SUPPRESS_WITH_DELETE', 'SUPPRESS', 'UNSUPPRESS')),
    subject_hash text not null,            -- keyed hash of the userId (control.privacy_key)
    subject_enc text,                      -- Fernet token of the userId (and email) while work remains; null once done
    requested_by text not null,
    requested_at timestamptz not null default now(),
    state text not null default 'pending' check (state in ('pending', 'erasing', 'rebuilding', 'done', 'failed')),
    finished_at timestamptz,
    counts jsonb not null default '{}'::jsonb,  -- what the deletion removed, per store
    error text,
    check (state <> 'done' or subject_enc is null)
);
create index regulations_org_idx on control.regulations (org_id, requested_at);
create index regulations_unfinished_idx on control.regulations (regulation_id) where state <> 'done';

-- The people whose events the receiver accepts but does not land, and outbound does not send.
create table control.suppressions (
    org_id text not null references control.orgs (org_id),
    subject_hash text not null,
    regulation_id bigint not null references control.regulations (regulation_id),
    suppressed_at timestamptz not null default now(),
    primary key (org_id, subject_hash)
);
""",
    ),
    (
        13,
        "raw.segment_events partitioned by UTC receive day, a default partition, unique per partition",
        r"""
-- The rows move into a table of the same columns (every one it has now, in order) partitioned by
-- range of received_at, one partition per UTC day and a DEFAULT partition for a day that has none.
-- A unique index must hold the partition key, so (connection_id, message_id) is unique per
-- partition; landing makes it unique across them (segment_elt/ingest/landing.py).
alter table raw.segment_events rename to segment_events_unpartitioned;
create table raw.segment_events (like raw.segment_events_unpartitioned including all excluding indexes)
partition by range (received_at);
comment on table raw.segment_events is
'Staged Segment events, one partition per UTC day of received_at (raw.segment_events_pYYYYMMDD) '
'and raw.segment_events_default; unique on (connection_id, message_id), see docs/tables.md.';

create table raw.segment_events_default partition of raw.segment_events default;
create unique index segment_events_default_key on raw.segment_events_default (connection_id, message_id);

-- Create the missing day partitions of [first_day, last_day], each with its unique index; rows the
-- default partition holds for such a day move into it. Returns how many it created. A partition
-- is made apart and attached, which locks the parent only in SHARE UPDATE EXCLUSIVE mode (landing
-- and reads go on) and the default partition in ACCESS EXCLUSIVE mode while it is checked: the
-- caller bounds that wait with lock_timeout.
create function raw.create_day_partitions(first_day date, last_day date)
returns integer language plpgsql as $$
declare
    day date;
    name text;
    low timestamptz;
    high timestamptz;
    created integer := 0;
begin
    for day in select d::date from generate_series(first_day, last_day, interval '1 day') as g (d) loop
        name := 'segment_events_p' || to_char(day, 'YYYYMMDD');
        continue when to_regclass(format('raw.%I', name)) is not null;
        if created = 0 then
            lock table raw.segment_events in share update exclusive mode;
            lock table raw.segment_events_default in access exclusive mode;
        end if;
        low := day::timestamp at time zone 'UTC';
        high := (day + 1)::timestamp at time zone 'UTC';
        execute format(
            'create table raw.%I (like raw.segment_events including all excluding indexes)', name
        );
        execute format(
            'alter table raw.%I add constraint %I check (received_at >= %L and received_at < %L)',
            name, name || '_range', low, high
        );
        execute format(
            'with moved as (delete from raw.segment_events_default where received_at >= %L and received_at < %L'
            ' returning *) insert into raw.%I select * from moved',
            low, high, name
        );
        execute format('create unique index %I on raw.%I (connection_id, message_id)', name || '_key', name);
        execute format(
            'alter table raw.segment_events attach partition raw.%I for values from (%L) to (%L)', name, low, high
        );
        execute format('alter table raw.%I drop constraint %I', name, name || '_range');
        created := created + 1;
    end loop;
    return created;
end $$;

-- a partition for each day that has rows (not the days between: each partition costs landing a
-- probe) and for today and the week ahead
select raw.create_day_partitions(days.day, days.day)
from (select distinct (received_at at time zone 'UTC')::date as day from raw.segment_events_unpartitioned) as days;
select raw.create_day_partitions((now() at time zone 'UTC')::date, (now() at time zone 'UTC')::date + 7);
insert into raw.segment_events select * from raw.segment_events_unpartitioned;
-- the privileges granted on the table (a BI role's select, say) carry over; a partition needs none
do $$
declare
    granted record;
begin
    for granted in
        select
            case when acl.grantee = 0 then 'public' else quote_ident(roles.rolname) end as grantee,
            acl.privilege_type,
            acl.is_grantable
        from pg_class as tables
        cross join lateral aclexplode(tables.relacl) as acl
        left join pg_roles as roles on roles.oid = acl.grantee
        where tables.oid = 'raw.segment_events_unpartitioned'::regclass
    loop
        execute format(
            'grant %s on raw.segment_events to %s%s', granted.privilege_type, granted.grantee,
            case when granted.is_grantable then ' with grant option' else '' end
        );
    end loop;
end $$;
drop table raw.segment_events_unpartitioned;
-- built once over the copied rows, faster than kept up row by row during the copy
create index segment_events_loaded_at_idx on raw.segment_events (loaded_at);
create index segment_events_received_at_idx on raw.segment_events (received_at);
""",
    ),
    (
        14,
        "each staged row records the size and MD5 of its archive object, for retention's audit",
        r"""
-- Written in the same insert as the row (no extra statement on the receiver's path) and gone
-- with it; null on rows staged before this migration, which retention audits by a sample.
alter table raw.segment_events
    add column archive_size bigint,        -- bytes of the archive object, as a listing shows them
    add column archive_md5 bytea;          -- its MD5 (16 bytes); null where S3's ETag is not the MD5
""",
    ),
    (
        15,
        "privacy: suppressed anonymousIds and emails; archive objects holding events staged under another object",
        r"""
-- What each suppressed hash is of: the person's userId (one row per person), an anonymousId
-- stitched to it, or their email; the rows of one person share the regulation that suppressed them.
alter table control.suppressions
    add column kind text not null default 'userId' check (kind in ('userId', 'anonymousId', 'email'));

-- The staged calls that link an anonymousId to a userId, by userId: a suppression records the
-- anonymousIds stitched to the person (control/privacy.py, stitched_anonymous_ids) from a web
-- request, without reading every staged row.
create index segment_events_linking_user_idx on raw.segment_events (org_id, (payload ->> 'userId'))
    where payload ->> 'type' in ('identify', 'alias');

-- Archive objects holding events whose staged rows name another object (duplicates of staged
-- events: a retried request's), noted by the receiver as it lands them. A privacy deletion reads
-- the objects that staged rows of the person name, and these. Objects written before this table
-- are all noted, since nobody knows.
create table raw.archive_objects_with_duplicates (
    archive_key text primary key,
    noted_at timestamptz not null default now()
);
insert into raw.archive_objects_with_duplicates (archive_key)
select distinct archive_key from raw.segment_events;
""",
    ),
]

LATEST = MIGRATIONS[-1][0]


def upgrade(conn: psycopg.Connection, *, until: int | None = None) -> list[int]:
    """Apply the migrations not yet applied (up to version `until`, default all); returns their
    versions. Idempotent."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('segment_elt.schema'))")
        conn.execute("create schema if not exists control")
        conn.execute(
            "create table if not exists control.schema_version ("
            " version integer primary key, description text not null,"
            " applied_at timestamptz not null default now())"
        )
        done = {row[0] for row in conn.execute("select version from control.schema_version")}
        for version, description, sql in MIGRATIONS:
            if version in done or (until is not None and version > until):
                continue
            conn.execute(sql)
            conn.execute(
                "insert into control.schema_version (version, description) values (%s, %s)",
                (version, description),
            )
            applied.append(version)
    return applied


def current_version(conn: psycopg.Connection) -> int | None:
    if not db.relations_exist(conn, "control.schema_version"):
        return None
    return db.one(conn, "select max(version) from control.schema_version")[0]
