{{ config(materialized='table') }}
-- Usage indicators per account and event name, relative to as_of (var; default now):
-- windows are (as_of - N days, as_of].
with product_events as (
    select * from {{ ref('product_events') }}
),

scoped as (
    select *
    from product_events
    where product_events.event_at <= {{ as_of() }}
),

final as (
    select
        scoped.org_id,
        scoped.account_id,
        scoped.event_name,
        count(*) filter (
            where {{ in_last_days('scoped.event_at', 7) }}
        ) as events_7d,
        count(*) filter (
            where {{ in_last_days('scoped.event_at', 30) }}
        ) as events_30d,
        count(distinct coalesce(scoped.user_id, scoped.anonymous_id)) filter (
            where {{ in_last_days('scoped.event_at', 7) }}
        ) as active_users_7d,
        count(distinct coalesce(scoped.user_id, scoped.anonymous_id)) filter (
            where {{ in_last_days('scoped.event_at', 30) }}
        ) as active_users_30d,
        max(scoped.event_at) as last_seen_at
    from scoped
    group by
        scoped.org_id,
        scoped.account_id,
        scoped.event_name
)

select * from final
