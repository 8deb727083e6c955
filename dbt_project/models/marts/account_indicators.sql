{{ config(materialized='table') }}
-- Usage indicators per account and event name, relative to as_of (var; default now):
-- windows are (as_of - N days, as_of]. Its cost follows the last 30 days, not the history: the
-- counts read that window of product_events, and last_seen_at reads only as_of's day and each
-- group's last day before it (found in the small account_event_daily).
with daily as (
    select * from {{ ref('account_event_daily') }}
),

last_days as (
    select
        daily.org_id,
        daily.account_id,
        daily.event_name,
        max(daily.event_date) filter (
            where daily.event_date < ({{ as_of() }} at time zone 'UTC')::date
        ) as last_date
    from daily
    where daily.event_date <= ({{ as_of() }} at time zone 'UTC')::date
    group by
        daily.org_id,
        daily.account_id,
        daily.event_name
),

last_seen as (
    select
        last_days.org_id,
        last_days.account_id,
        last_days.event_name,
        max(product_events.event_at) as last_seen_at
    from last_days
    inner join {{ ref('product_events') }} as product_events
        on
            last_days.org_id = product_events.org_id
            and product_events.event_date in (last_days.last_date, ({{ as_of() }} at time zone 'UTC')::date)
            and last_days.event_name = product_events.event_name
            and last_days.account_id is not distinct from product_events.account_id
    where product_events.event_at <= {{ as_of() }}
    group by
        last_days.org_id,
        last_days.account_id,
        last_days.event_name
),

window_30d as (
    select
        product_events.org_id,
        product_events.account_id,
        product_events.event_name,
        count(*) filter (
            where {{ in_last_days('product_events.event_at', 7) }}
        ) as events_7d,
        count(*) as events_30d,
        count(distinct coalesce(product_events.user_id, product_events.anonymous_id)) filter (
            where {{ in_last_days('product_events.event_at', 7) }}
        ) as active_users_7d,
        count(distinct coalesce(product_events.user_id, product_events.anonymous_id)) as active_users_30d
    from {{ ref('product_events') }} as product_events
    where
        product_events.event_at <= {{ as_of() }}
        and {{ in_last_days('product_events.event_at', 30) }}
    group by
        product_events.org_id,
        product_events.account_id,
        product_events.event_name
),

final as (
    select
        last_seen.org_id,
        last_seen.account_id,
        last_seen.event_name,
        coalesce(window_30d.events_7d, 0) as events_7d,
        coalesce(window_30d.events_30d, 0) as events_30d,
        coalesce(window_30d.active_users_7d, 0) as active_users_7d,
        coalesce(window_30d.active_users_30d, 0) as active_users_30d,
        last_seen.last_seen_at
    from last_seen
    left join window_30d
        on
            last_seen.org_id = window_30d.org_id
            and last_seen.account_id is not distinct from window_30d.account_id
            and last_seen.event_name = window_30d.event_name
)

select * from final
