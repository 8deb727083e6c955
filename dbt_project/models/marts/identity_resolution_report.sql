{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ forget_affected_days() }}",
        indexes=[{'columns': ['connection_id', 'event_date']}],
        post_hook=[
            "{{ set_watermark(watermark('product_events')) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- How identity resolution went: events per connection, UTC day and the rule that matched them
-- ('unresolved' when none did), for an analyst checking the result of editing the rules or
-- importing entities. Each run recomputes whole (org, day) pairs its batch touched, as
-- account_event_daily does, so re-resolved events move between rules exactly.
with scoped as (
    {{ events_of_affected_days() }}
),

final as (
    select
        scoped.org_id,
        scoped.connection_id,
        scoped.event_date,
        coalesce(scoped.matched_by, 'unresolved') as matched_by,
        count(*) as event_count,
        count(distinct coalesce(scoped.user_id, scoped.anonymous_id)) as unique_users
    from scoped
    group by
        scoped.org_id,
        scoped.connection_id,
        scoped.event_date,
        coalesce(scoped.matched_by, 'unresolved')
)

select * from final
