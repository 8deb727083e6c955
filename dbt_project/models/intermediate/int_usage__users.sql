{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ forget_changed_usage() }}",
        indexes=[
            {'columns': ['org_id', 'account_id', 'event_name', 'user_key']},
            {'columns': ['org_id', 'first_date']},
            {'columns': ['org_id', 'last_date']},
        ],
        post_hook=[
            "analyze {{ this }}",
            "{{ set_watermark(watermark('int_usage__daily_users')) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- One row per org, account, event name and user who used it: when first and last. Each run
-- recomputes the rows a change can reach: those with a use on a day it recomputed (see
-- forget_changed_usage), each with one index probe at either end of int_usage__daily_users (read
-- directly: a CTE used twice is materialized and loses the index), so the cost follows the
-- changed days' users, not their history.
with
{% if is_incremental() %}
    reached as (
        {{ usage_reached() }}
    ),

    final as (
        select
            reached.org_id,
            reached.account_id,
            reached.event_name,
            reached.user_key,
            first_use.first_at,
            first_use.event_date as first_date,
            last_use.last_at,
            last_use.event_date as last_date
        from reached
        cross join
            lateral (
                select
                    daily.first_at,
                    daily.event_date
                from {{ ref('int_usage__daily_users') }} as daily
                where
                    daily.org_id = reached.org_id
                    and daily.account_id = reached.account_id
                    and daily.event_name = reached.event_name
                    and daily.user_key = reached.user_key
                order by daily.event_date asc
                limit 1
            ) as first_use
        cross join
            lateral (
                select
                    daily.last_at,
                    daily.event_date
                from {{ ref('int_usage__daily_users') }} as daily
                where
                    daily.org_id = reached.org_id
                    and daily.account_id = reached.account_id
                    and daily.event_name = reached.event_name
                    and daily.user_key = reached.user_key
                order by daily.event_date desc
                limit 1
            ) as last_use
    )
{% else %}
    daily as (
        select * from {{ ref('int_usage__daily_users') }}
    ),

    final as (
        select
            daily.org_id,
            daily.account_id,
            daily.event_name,
            daily.user_key,
            min(daily.first_at) as first_at,
            min(daily.event_date) as first_date,
            max(daily.last_at) as last_at,
            max(daily.event_date) as last_date
        from daily
        group by
            daily.org_id,
            daily.account_id,
            daily.event_name,
            daily.user_key
    )
{% endif %}

select * from final
