-- What group calls carry for each account: health and usage, addressed to the groupId the
-- product itself sent for the account (a groupId Segment has not seen would create a second
-- group). Several groupIds resolve to one account: the one of the most recent group call wins
-- (ties: the smallest groupId). An account the product never sent a group call for has a null
-- group_id; the sync skips it and counts it (reason group_without_product_group_id).
with health as (
    select * from {{ ref('account_health') }}
),

account_traits as (
    select * from {{ ref('account_traits') }}
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

product_group_ids as (
    select distinct on (account_traits.org_id, account_traits.account_id)
        account_traits.org_id,
        account_traits.account_id,
        account_traits.external_group_id as group_id
    from account_traits
    where account_traits.account_id is not null
    order by
        account_traits.org_id asc,
        account_traits.account_id asc,
        account_traits.last_grouped_at desc,
        account_traits.external_group_id asc
),

final as (
    select
        health.org_id,
        health.account_id,
        product_group_ids.group_id,
        jsonb_strip_nulls(jsonb_build_object(
            'health_score', health.health_score,
            'events_30d', coalesce(usage.events_30d, 0),
            'last_seen_at', usage.last_seen_at
        )) as traits
    from health
    left join product_group_ids
        on
            health.org_id = product_group_ids.org_id
            and health.account_id = product_group_ids.account_id
    left join usage
        on
            health.org_id = usage.org_id
            and health.account_id = usage.account_id
)

select * from final
