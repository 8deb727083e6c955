{{ config(materialized='table') }}
-- The debug list: the newest staged events of each connection (allowlisted or not), newest
-- first, with what Segment sent as group and user ids and the account resolution gave.
with connections as (
    select * from {{ ref('stg_control__connections') }}
),

allowlist as (
    select * from {{ ref('stg_control__allowlist') }}
),

newest as (
    select newest_events.*
    from connections
    cross join lateral (
        select
            events.connection_id,
            events.received_at,
            events.message_id,
            events.event_type,
            events.event_name,
            events.payload ->> 'groupId' as sent_group_id,
            events.payload -> 'context' ->> 'groupId' as sent_context_group_id,
            events.payload ->> 'userId' as external_user_id
        from {{ ref('stg_segment__events') }} as events
        where events.connection_id = connections.connection_id
        order by events.received_at desc
        limit {{ var('recent_events_per_connection') }}
    ) as newest_events
),

final as (
    select
        newest.connection_id,
        newest.received_at,
        newest.message_id,
        newest.event_type,
        newest.event_name,
        allowlist.event_name is not null as in_allowlist,
        coalesce(newest.sent_group_id, newest.sent_context_group_id) as external_group_id,
        newest.external_user_id,
        resolved.account_id
    from newest
    left join allowlist
        on
            newest.connection_id = allowlist.connection_id
            and newest.event_name = allowlist.event_name
    left join {{ ref('product_events') }} as resolved
        on
            newest.connection_id = resolved.connection_id
            and newest.message_id = resolved.message_id
)

select * from final
order by
    final.connection_id asc,
    final.received_at desc
