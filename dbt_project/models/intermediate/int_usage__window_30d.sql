{{ config(materialized='table') }}
-- The 30 days before as_of, per org, account (null: unresolved), event name, person and UTC day:
-- the events in the last 7 and 30 days. account_indicators and account_health count from it, so
-- a run reads that window of product_events once, in storage order (in_window_in_storage_order),
-- and its cost follows the window, not the history.
with final as (
    select
        product_events.org_id,
        product_events.account_id,
        product_events.event_name,
        coalesce(product_events.user_id, product_events.anonymous_id) as user_key,
        product_events.event_date,
        count(*) filter (
            where {{ in_last_days('product_events.event_at', 7) }}
        ) as events_7d,
        count(*) as events_30d
    from {{ ref('product_events') }} as product_events
    where
        {{ in_window_in_storage_order('product_events.event_at', 30) }}
    group by
        product_events.org_id,
        product_events.account_id,
        product_events.event_name,
        coalesce(product_events.user_id, product_events.anonymous_id),
        product_events.event_date
)

select * from final
