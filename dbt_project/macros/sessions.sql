{% macro session_gap() -%}
    {#- var session_gap_minutes (default 30) as an SQL interval; anything but a whole number of minutes >= 1 stops the run. -#}
    {%- set value = var('session_gap_minutes') | string -%}
    {%- if not modules.re.match('^[1-9][0-9]{0,5}$', value) -%}
        {{ exceptions.raise_compiler_error("var session_gap_minutes must be a whole number of minutes, 1 or more, got " ~ value) }}
    {%- endif -%}
    interval '{{ value }} minutes'
{%- endmacro %}

{% macro is_session_call(alias) -%}
    {#- The calls sessions are built from: every track, page and screen. -#}
    {{ alias }}.event_type in ('track', 'page', 'screen')
{%- endmacro %}

{% macro session_page_name(alias) -%}
    {#-
        A page or screen call's name for sessions.first_name: properties.name, else properties.path
        (NULL for other calls). Taken from properties before the calls are sorted, so that the
        sessions' sorts carry a short text instead of every call's properties.
    -#}
    case
        when {{ alias }}.event_type in ('page', 'screen')
            then coalesce(
                {{ json_text(alias ~ ".properties ->> 'name'") }},
                {{ json_text(alias ~ ".properties ->> 'path'") }}
            )
    end
{%- endmacro %}

{% macro session_order(alias) -%}
    {#- The order of a user's calls within their sessions (ties broken as everywhere: oldest_first, then connection). -#}
    {{ oldest_first(alias) }}, {{ alias }}.connection_id collate "C"
{%- endmacro %}

{% macro session_changes(model_position, upstream=['product_events']) -%}
    {#-
        The users whose sessions a run of a session-based model recomputes, with the earliest event
        time that changed for each (changed_from): the track, page and screen calls queued since
        `model_position` that product_events has consumed, under every user key the call has now or
        may have had before: its userId, else its anonymousId and every userId that anonymousId was
        ever linked to (stitching may have moved it from one to another: docs/identity.md#anonymous-users).
        An event's time never changes, so nothing of a user's sessions before changed_from changes.
    -#}
    with queued as (
        select distinct
            queue.connection_id,
            queue.message_id
        from {{ ref('int_events__resolution_queue') }} as queue
        where {{ queued_since('queue.queued_at', model_position, upstream) }}
    ),

    -- one probe of staging's unique index per queued event (limit 1 keeps it a probe: as a join,
    -- PostgreSQL may hash the queue and scan the whole staged history for it)
    changed as (
        select
            events.org_id,
            events.user_id,
            events.anonymous_id,
            events.user_key,
            events.event_at
        from queued
        cross join lateral (
            select
                staged.org_id,
                staged.user_id,
                staged.anonymous_id,
                staged.user_key,
                staged.event_type,
                staged.event_at
            from {{ ref('stg_segment__events') }} as staged
            where
                staged.connection_id = queued.connection_id
                and staged.message_id = queued.message_id
            limit 1
        ) as events
        where {{ is_session_call('events') }}
    ),

    candidates as (
        select
            changed.org_id,
            changed.user_key,
            changed.event_at
        from changed
        where changed.user_key is not null
        union all
        select
            changed.org_id,
            linking.user_id as user_key,
            changed.event_at
        from changed
        inner join {{ ref('stg_segment__events') }} as linking
            on
                changed.org_id = linking.org_id
                and changed.anonymous_id = linking.linked_anonymous_id
        where changed.user_id is null
    )

    select
        candidates.org_id,
        candidates.user_key,
        min(candidates.event_at) as changed_from
    from candidates
    group by
        candidates.org_id,
        candidates.user_key
{%- endmacro %}

{% macro forget_changed_sessions() -%}
    {#-
        Pre-hook of sessions: delete, for each changed user, every session a change can reach: all
        after the last one that ended more than the gap before changed_from (an event at or after
        changed_from can neither join nor split it, so it and those before it stay as they are,
        numbers included).
    -#}
    {% if is_incremental() %}
    -- The rows go by ctid, gathered one index range per changed user (offset 0 keeps the lateral
    -- a loop): as a join, PostgreSQL misjudges how few users changed and merges or hashes the
    -- whole table, so the cost would follow every user's history of sessions.
    with reach as materialized (
        select
            changes.org_id,
            changes.user_key,
            coalesce(kept.session_number, 0) as kept_through
        from ({{ session_changes(own_watermark()) }}) as changes
        left join lateral (
            select earlier.session_number
            from {{ this }} as earlier
            where
                earlier.org_id = changes.org_id
                and earlier.user_key = changes.user_key
                and earlier.session_end < changes.changed_from - {{ session_gap() }}
            order by earlier.session_number desc
            limit 1
        ) as kept on true
    )

    delete from {{ this }} as target
    where target.ctid = any(array(
        select later.ctid
        from reach
        cross join lateral (
            select changed.ctid
            from {{ this }} as changed
            where
                changed.org_id = reach.org_id
                and changed.user_key = reach.user_key
                and changed.session_number > reach.kept_through
            offset 0
        ) as later
    ))
    {% else %}
    select 1
    {% endif %}
{%- endmacro %}

{% macro engagement_firsts() -%}
    {#-
        The days account_engagement_daily recomputes, as (org_id, first day) rows: per org, from
        the first day its run's changes can reach to the newest. Those are the event days queued
        since its watermark (affected_days) and the first day of every session that ends at most
        the session gap before the earliest of them: a changed call can reach no session that
        ended earlier (see forget_changed_sessions). Every later day follows, as its trailing
        7/30-day counts may have moved. Read when the model runs; none at parse time.
    -#}
    {%- set firsts = [] -%}
    {%- if execute -%}
        {%- set found -%}
            with queued_days as (
                select
                    affected.org_id,
                    min(affected.event_date) as first_day
                from ({{ affected_days(engagement_upstream()) }}) as affected
                group by affected.org_id
            )

            select
                queued_days.org_id,
                least(queued_days.first_day, reached.first_day)::text
            from queued_days
            cross join lateral (
                select min(ending.session_date) as first_day
                from (
                    select sessions.session_date
                    from {{ ref('sessions') }} as sessions
                    where
                        sessions.org_id = queued_days.org_id
                        and sessions.session_end >= (queued_days.first_day::timestamp at time zone 'UTC') - {{ session_gap() }}
                    -- a fence: the sessions ending since then through the (org_id, session_end) index; a
                    -- bare min() walks the session_date index from the first session ever instead
                    offset 0
                ) as ending
            ) as reached
        {%- endset -%}
        {%- set firsts = run_query(found).rows -%}
    {%- endif -%}
    {{ return(firsts) }}
{%- endmacro %}

{% macro on_or_after_first_days(firsts, org_column, day_column, days_before=0) -%}
    {#-
        A condition true for the rows of each org in `firsts` (engagement_firsts()) dated on or
        after its first day less `days_before`; false when there are none. Constants, so that
        PostgreSQL estimates the range from its statistics and reads it through an
        (org_id, day) index: joined to a list of first days, it cannot size the range, and on a
        long history it sometimes chose to scan every row of the table.
    -#}
    (
    {%- for first in firsts %}
        ({{ org_column }} = '{{ first[0] | replace("'", "''") }}'
            and {{ day_column }} >= date '{{ first[1] }}' - {{ days_before }}){{ ' or' if not loop.last }}
    {%- else %}
        false
    {%- endfor %}
    )
{%- endmacro %}

{% macro engagement_upstream() -%}
    {#- What account_engagement_daily reads besides product_events: it consumes only what both have. -#}
    {{ return(['sessions', 'account_event_daily']) }}
{%- endmacro %}

{% macro forget_engagement_days() -%}
    {#- Pre-hook of account_engagement_daily: delete the days its run recomputes. -#}
    {% if is_incremental() %}
    delete from {{ this }} as target
    where {{ on_or_after_first_days(engagement_firsts(), 'target.org_id', 'target.event_date') }}
    {% else %}
    select 1
    {% endif %}
{%- endmacro %}

{% macro usage_reached() -%}
    {#-
        The (org, account, event name, user) rows of int_usage__users a run recomputes: those with
        a use on a day it recomputes (affected_days) now, and those whose first or last use was on
        such a day before (a use in between leaves both ends as they are). Read when the model
        runs, before its pre-hook deletes them, and inlined as a VALUES list.
    -#}
    {%- set rows = [] -%}
    {%- if execute -%}
        {%- set found -%}
            select
                daily.org_id,
                daily.account_id,
                daily.event_name,
                daily.user_key
            from {{ ref('int_usage__daily_users') }} as daily
            inner join ({{ affected_days(['int_usage__daily_users']) }}) as affected
                on
                    daily.org_id = affected.org_id
                    and daily.event_date = affected.event_date
            union
            select
                kept.org_id,
                kept.account_id,
                kept.event_name,
                kept.user_key
            from {{ this }} as kept
            inner join ({{ affected_days(['int_usage__daily_users']) }}) as affected
                on
                    kept.org_id = affected.org_id
                    and (kept.first_date = affected.event_date or kept.last_date = affected.event_date)
        {%- endset -%}
        {%- set rows = run_query(found).rows -%}
    {%- endif -%}
    select
        reached.org_id,
        reached.account_id,
        reached.event_name,
        reached.user_key
    from (values
        {%- for row in rows %}
            ({% for value in row %}{{ "null" if value is none else "'" ~ (value | replace("'", "''")) ~ "'" }}{{ ", " if not loop.last }}{% endfor %}),
        {%- endfor %}
        (null, null, null, null)
    ) as reached (org_id, account_id, event_name, user_key)
    where reached.org_id is not null
{%- endmacro %}

{% macro forget_changed_usage() -%}
    {#- Pre-hook of int_usage__users: delete the rows its run recomputes. -#}
    {% if is_incremental() %}
    delete from {{ this }} as target
    using ({{ usage_reached() }}) as reached
    where target.org_id = reached.org_id
        and target.account_id = reached.account_id
        and target.event_name = reached.event_name
        and target.user_key = reached.user_key
    {% else %}
    select 1
    {% endif %}
{%- endmacro %}
