-- The identity rules in force for each connection: its own rows of the identity_rules seed if
-- it has any, else the default rows ('*'), parsed into what the resolution joins need.
with rules as (
    select * from {{ ref('identity_rules') }}
),

connections as (
    select * from {{ ref('stg_control__connections') }}
),

own_rules as (
    select distinct rules.connection_id
    from rules
    where rules.connection_id <> '*'
),

in_force as (
    select
        connections.connection_id,
        rules.chain,
        rules.position,
        trim(rules.source) as source,
        trim(rules.target) as target
    from connections
    inner join rules
        on
            connections.connection_id = rules.connection_id
            or (
                rules.connection_id = '*'
                and connections.connection_id not in (select own_rules.connection_id from own_rules)
            )
),

final as (
    select
        in_force.connection_id,
        in_force.chain,
        in_force.position,
        case when in_force.chain = 'account' then 0 else 1 end as chain_order,
        case
            when in_force.source like 'payload:%' then 'payload'
            else in_force.source
        end as source_kind,
        case
            when in_force.source like 'payload:%'
                then substr(in_force.source, length('payload:') + 1)
        end as source_path,
        in_force.target,
        in_force.chain || ':' || in_force.source || '->'
        || regexp_replace(in_force.target, '^(account|contact)\.', '') as rule_name
    from in_force
)

select * from final
