-- An audience: users with at least 20 allowlisted events in the 7 days before as_of. Its file
-- name is the boolean trait outbound identify calls set (power_users: true / false).
with product_events as (
    select * from {{ ref('product_events') }}
),

final as (
    select
        product_events.org_id,
        product_events.user_id
    from product_events
    where
        product_events.user_id is not null
        and product_events.event_at <= {{ as_of() }}
        and {{ in_last_days('product_events.event_at', 7) }}
    group by
        product_events.org_id,
        product_events.user_id
    having count(*) >= 20
)

select * from final
