{{ config(materialized='table') }}
-- One row per group id Segment sent: group traits merged (the newest value of each key wins,
-- kept per key in int_traits__latest, so the cost follows the group ids, not the history), and
-- the account the connection of the newest group call resolves it to through its groupId rules.
with latest as (
    select * from {{ ref('int_traits__latest') }}
),

rules as (
    select * from {{ ref('int_identity__rules') }}
),

entity_keys as (
    select * from {{ ref('int_identity__entity_keys') }}
),

latest_calls as (
    select
        latest.org_id,
        latest.subject_id as external_group_id,
        latest.connection_id,
        latest.event_at as last_grouped_at
    from latest
    where
        latest.subject_type = 'group'
        and latest.trait_key is null
),

merged as (
    select
        latest.org_id,
        latest.subject_id as external_group_id,
        jsonb_object_agg(latest.trait_key, latest.trait_value) as traits
    from latest
    where
        latest.subject_type = 'group'
        and latest.trait_key is not null
    group by
        latest.org_id,
        latest.subject_id
),

-- the account the latest call's connection resolves this group id to, through its groupId rules
matched as (
    select distinct on (latest_calls.org_id, latest_calls.external_group_id)
        latest_calls.org_id,
        latest_calls.external_group_id,
        entity_keys.account_id
    from latest_calls
    inner join rules
        on
            latest_calls.connection_id = rules.connection_id
            and rules.chain = 'account'
            and rules.source_kind = 'groupId'
    inner join entity_keys
        on
            latest_calls.org_id = entity_keys.org_id
            and rules.target = entity_keys.target
            and latest_calls.external_group_id = entity_keys.key_value
    order by
        latest_calls.org_id,
        latest_calls.external_group_id,
        {{ rule_precedence('rules') }}
),

final as (
    select
        latest_calls.org_id,
        latest_calls.external_group_id,
        matched.account_id,
        coalesce(merged.traits, '{}'::jsonb) as traits,
        latest_calls.last_grouped_at
    from latest_calls
    left join merged
        on
            latest_calls.org_id = merged.org_id
            and latest_calls.external_group_id = merged.external_group_id
    left join matched
        on
            latest_calls.org_id = matched.org_id
            and latest_calls.external_group_id = matched.external_group_id
)

select * from final
