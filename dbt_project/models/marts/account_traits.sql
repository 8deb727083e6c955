{{ config(materialized='table') }}
-- One row per group id Segment sent: group traits merged (the newest value of each key wins),
-- and the account the connection's groupId rules match it to.
with events as (
    select * from {{ ref('stg_segment__events') }}
),

rules as (
    select * from {{ ref('int_identity__rules') }}
),

entity_keys as (
    select * from {{ ref('int_identity__entity_keys') }}
),

group_calls as (
    select *
    from events
    where
        events.event_type = 'group'
        and events.external_group_id is not null
),

trait_values as (
    select distinct on (group_calls.org_id, group_calls.external_group_id, traits.key)
        group_calls.org_id,
        group_calls.external_group_id,
        traits.key,
        traits.value
    from group_calls
    cross join
        lateral jsonb_each(
            case when jsonb_typeof(group_calls.traits) = 'object' then group_calls.traits else '{}'::jsonb end
        ) as traits
    order by
        group_calls.org_id asc,
        group_calls.external_group_id asc,
        traits.key asc,
        {{ newest_first('group_calls') }}
),

merged as (
    select
        trait_values.org_id,
        trait_values.external_group_id,
        jsonb_object_agg(trait_values.key, trait_values.value) as traits
    from trait_values
    group by
        trait_values.org_id,
        trait_values.external_group_id
),

latest_calls as (
    select distinct on (group_calls.org_id, group_calls.external_group_id)
        group_calls.org_id,
        group_calls.external_group_id,
        group_calls.connection_id,
        group_calls.event_at as last_grouped_at
    from group_calls
    order by
        group_calls.org_id asc,
        group_calls.external_group_id asc,
        {{ newest_first('group_calls') }}
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
        rules.position
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
