{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ forget_affected_days() }}",
        indexes=[
            {'columns': ['org_id', 'event_date']},
            {'columns': ['org_id', 'account_id', 'event_name', 'user_key', 'event_date']},
        ],
        post_hook=[
            "analyze {{ this }}",
            "{{ set_watermark(watermark('product_events')) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- Who used which event, per account, UTC day and user, with the first and last time that day:
-- what feature adoption is counted from (resolved events only). Recomputed per (org, day) like
-- account_event_daily.
with scoped as (
    {{ events_of_affected_days() }}
),

final as (
    select
        scoped.org_id,
        scoped.account_id,
        scoped.event_name,
        scoped.event_date,
        coalesce(scoped.user_id, scoped.anonymous_id) as user_key,
        min(scoped.event_at) as first_at,
        max(scoped.event_at) as last_at
    from scoped
    where
        scoped.account_id is not null
        and coalesce(scoped.user_id, scoped.anonymous_id) is not null
    group by
        scoped.org_id,
        scoped.account_id,
        scoped.event_name,
        scoped.event_date,
        coalesce(scoped.user_id, scoped.anonymous_id)
)

select * from final
