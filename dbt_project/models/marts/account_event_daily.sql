{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ forget_affected_days() }}",
        indexes=[{'columns': ['org_id', 'event_date', 'account_id']}],
        post_hook=[
            "{{ set_watermark(watermark('product_events')) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- Events and distinct users per account, day and event name. Each run recomputes whole
-- (org, day) pairs that its batch touched, so late, duplicate and re-resolved events stay exact.
with scoped as (
    {{ events_of_affected_days() }}
),

final as (
    select
        scoped.org_id,
        scoped.account_id,
        scoped.event_date,
        scoped.event_name,
        count(*) as event_count,
        count(distinct coalesce(scoped.user_id, scoped.anonymous_id)) as unique_users
    from scoped
    group by
        scoped.org_id,
        scoped.account_id,
        scoped.event_date,
        scoped.event_name
)

select * from final
