-- What group calls carry for each account Segment knows by a group id: health and usage.
with health as (
    select * from {{ ref('account_health') }}
),

accounts as (
    select * from {{ ref('stg_app__accounts') }}
),

usage as (
    select
        indicators.org_id,
        indicators.account_id,
        sum(indicators.events_30d) as events_30d,
        max(indicators.last_seen_at) as last_seen_at
    from {{ ref('account_indicators') }} as indicators
    where indicators.account_id is not null
    group by
        indicators.org_id,
        indicators.account_id
),

final as (
    select
        health.org_id,
        health.account_id,
        coalesce(accounts.external_id, health.account_id) as group_id,
        jsonb_strip_nulls(jsonb_build_object(
            'health_score', health.health_score,
            'events_30d', coalesce(usage.events_30d, 0),
            'last_seen_at', usage.last_seen_at
        )) as traits
    from health
    left join accounts
        on
            health.org_id = accounts.org_id
            and health.account_id = accounts.account_id
    left join usage
        on
            health.org_id = usage.org_id
            and health.account_id = usage.account_id
)

select * from final
