{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ forget_engagement_days() }}",
        indexes=[{'columns': ['org_id', 'event_date', 'account_id']}],
        post_hook=[
            "{{ set_watermark(consumed_by(engagement_upstream())) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- Engagement per account (null = unresolved) and UTC day: active users, sessions started that
-- day (a session counts for its account and its first day), their minutes, and on how many of the
-- trailing 7 and 30 days the account was active (had an allowlisted event): DAU/WAU/MAU-style
-- stickiness. Each run recomputes each org's days from the first one its changes reach (see
-- engagement_firsts); a day with neither events nor sessions has no row.
with
{% if is_incremental() %}
    {%- set firsts = engagement_firsts() %}
    events as (
        select product_events.*
        from {{ ref('product_events') }} as product_events
        where {{ on_or_after_first_days(firsts, 'product_events.org_id', 'product_events.event_date') }}
    ),

    scoped_sessions as (
        select sessions.*
        from {{ ref('sessions') }} as sessions
        where {{ on_or_after_first_days(firsts, 'sessions.org_id', 'sessions.session_date') }}
    ),

    -- the active days the trailing counts of those days read
    active_days as (
        select distinct
            daily.org_id,
            daily.account_id,
            daily.event_date
        from {{ ref('account_event_daily') }} as daily
        where {{ on_or_after_first_days(firsts, 'daily.org_id', 'daily.event_date', days_before=29) }}
    ),
{% else %}
    events as (
        select * from {{ ref('product_events') }}
    ),

    scoped_sessions as (
        select * from {{ ref('sessions') }}
    ),

    active_days as (
        select distinct
            daily.org_id,
            daily.account_id,
            daily.event_date
        from {{ ref('account_event_daily') }} as daily
    ),
{% endif %}

-- one row per account and day with its measures; the active days before the recomputed ones
-- only as context for the trailing counts (unreported)
facts as (
    select
        events.org_id,
        events.account_id,
        events.event_date,
        count(distinct coalesce(events.user_id, events.anonymous_id)) as active_users,
        0 as sessions,
        0 as session_minutes,
        null::numeric as median_session_minutes,
        1 as active,
        true as reported
    from events
    group by
        events.org_id,
        events.account_id,
        events.event_date
    union all
    select
        scoped_sessions.org_id,
        scoped_sessions.account_id,
        scoped_sessions.session_date as event_date,
        0 as active_users,
        count(*) as sessions,
        round(sum(scoped_sessions.duration_s) / 60, 2) as session_minutes,
        round(
            (percentile_cont(0.5) within group (order by scoped_sessions.duration_s::float8) / 60)::numeric, 2
        ) as median_session_minutes,
        0 as active,
        true as reported
    from scoped_sessions
    group by
        scoped_sessions.org_id,
        scoped_sessions.account_id,
        scoped_sessions.session_date
    union all
    select
        active_days.org_id,
        active_days.account_id,
        active_days.event_date,
        0 as active_users,
        0 as sessions,
        0 as session_minutes,
        null::numeric as median_session_minutes,
        1 as active,
        false as reported
    from active_days
),

account_days as (
    select
        facts.org_id,
        facts.account_id,
        facts.event_date,
        sum(facts.active_users) as active_users,
        sum(facts.sessions) as sessions,
        sum(facts.session_minutes) as session_minutes,
        max(facts.median_session_minutes) as median_session_minutes,
        max(facts.active) as active,
        bool_or(facts.reported) as reported
    from facts
    group by
        facts.org_id,
        facts.account_id,
        facts.event_date
),

stickiness as (
    select
        account_days.*,
        sum(account_days.active) over (
            partition by account_days.org_id, account_days.account_id
            order by account_days.event_date
            range between interval '6 days' preceding and current row
        ) as active_days_7d,
        sum(account_days.active) over (
            partition by account_days.org_id, account_days.account_id
            order by account_days.event_date
            range between interval '29 days' preceding and current row
        ) as active_days_30d
    from account_days
),

final as (
    select
        stickiness.org_id,
        stickiness.account_id,
        stickiness.event_date,
        stickiness.active_users::integer as active_users,
        stickiness.sessions::integer as sessions,
        stickiness.session_minutes,
        stickiness.median_session_minutes,
        stickiness.active_days_7d::integer as active_days_7d,
        stickiness.active_days_30d::integer as active_days_30d
    from stickiness
    where stickiness.reported
)

select * from final
