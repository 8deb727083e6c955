{{
    config(
        materialized='table',
        post_hook=[
            "analyze {{ this }}",
            "{{ set_watermark(queue_end(), batch_after=resolution_starts_after()) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- The lateral look-ups read stg_segment__events directly (an import CTE used several times
-- would be materialized by PostgreSQL and lose its indexes).
-- Identity resolution of this run's batch (the queue since product_events' watermark, or every
-- staged event when product_events is built in full), as set-based joins: each event's source values (its group, user,
-- email, payload paths) meet the rules in force for its connection and the entity keys of its
-- org; the first match in chain and position order wins (docs/identity.md). An event without a
-- userId counts as the user its anonymousId is linked to, if any: it takes that userId and reads
-- that user's group bindings and identify emails.
with events as (
    select * from {{ ref('stg_segment__events') }}
),

rules as (
    select * from {{ ref('int_identity__rules') }}
),

entity_keys as (
    select * from {{ ref('int_identity__entity_keys') }}
),

{% set resolved_after = resolution_starts_after() %}
{% if resolved_after != "'-infinity'::timestamptz" %}
    queued as (
        select distinct
            queue.connection_id,
            queue.message_id
        from {{ ref('int_events__resolution_queue') }} as queue
        where queue.queued_at > {{ resolved_after }}
    ),

    batch as (
        select events.*
        from events
        inner join queued
            on
                events.connection_id = queued.connection_id
                and events.message_id = queued.message_id
    ),
{% else %}
    batch as (
        select * from events
    ),
{% endif %}

-- anonymous events take the user their anonymousId is linked to (docs/identity.md#anonymous-users)
batch_anonymous_ids as (
    select distinct
        batch.org_id,
        batch.anonymous_id
    from batch
    where batch.user_id is null and batch.anonymous_id is not null
),

links as (
    select
        batch_anonymous_ids.org_id,
        batch_anonymous_ids.anonymous_id,
        linked.user_id
    from batch_anonymous_ids
    cross join lateral (
        {{ linked_user('batch_anonymous_ids.org_id', 'batch_anonymous_ids.anonymous_id', 'linking') }}
    ) as linked
),

-- stitched_user_id: userId, else the linked userId; user_key: whose calls resolution reads
stitched as (
    select
        batch.org_id,
        batch.connection_id,
        batch.message_id,
        batch.event_type,
        batch.event_name,
        coalesce(batch.user_id, links.user_id) as stitched_user_id,
        batch.anonymous_id,
        coalesce(batch.user_id, links.user_id, batch.anonymous_id) as user_key,
        batch.external_group_id,
        batch.email,
        batch.event_at,
        batch.event_date,
        batch.reported_event_at,
        batch.received_at,
        batch.properties,
        batch.payload
    from batch
    left join links
        on
            batch.user_id is null
            and batch.org_id = links.org_id
            and batch.anonymous_id = links.anonymous_id
),

-- per user of the batch, what does not depend on the event's time, looked up once per user:
-- their earliest group binding and their latest identify email
batch_users as (
    select distinct
        stitched.org_id,
        stitched.user_key
    from stitched
),

user_facts as (
    select
        batch_users.org_id,
        batch_users.user_key,
        earliest.external_group_id as earliest_group_id,
        latest_identify.email as latest_email
    from batch_users
    left join lateral (
        {{ user_call('group', 'external_group_id', 'batch_users.org_id', 'batch_users.user_key', 'bound',
                     oldest=true) }}
    ) as earliest on true
    left join lateral (
        {{ user_call('identify', 'email', 'batch_users.org_id', 'batch_users.user_key', 'identified') }}
    ) as latest_identify on true
),

-- the event's group: its own, else the user's binding as of the event's time, else the earliest
with_sources as (
    select
        stitched.*,
        coalesce(stitched.external_group_id, in_force.external_group_id, user_facts.earliest_group_id) as group_source,
        coalesce(stitched.email, user_facts.latest_email) as email_source
    from stitched
    left join user_facts
        on
            stitched.org_id = user_facts.org_id
            and stitched.user_key = user_facts.user_key
    left join lateral (
        {{ user_call('group', 'external_group_id', 'stitched.org_id', 'stitched.user_key', 'bound',
                     at_most='stitched.event_at') }}
    ) as in_force on stitched.external_group_id is null
),

source_values as (
    select
        with_sources.connection_id,
        with_sources.message_id,
        with_sources.org_id,
        rules.chain_order,
        rules.position,
        rules.rule_name,
        rules.target,
        case rules.source_kind
            when 'groupId' then with_sources.group_source
            when 'userId' then with_sources.stitched_user_id
            when 'anonymousId' then with_sources.anonymous_id
            when 'email' then with_sources.email_source
            when 'payload' then with_sources.payload #>> string_to_array(rules.source_path, '.')
        end as source_value
    from with_sources
    inner join rules
        on with_sources.connection_id = rules.connection_id
),

matches as (
    select
        source_values.connection_id,
        source_values.message_id,
        source_values.chain_order,
        source_values.position,
        source_values.rule_name,
        entity_keys.account_id,
        entity_keys.contact_id
    from source_values
    inner join entity_keys
        on
            source_values.org_id = entity_keys.org_id
            and source_values.target = entity_keys.target
            and entity_keys.key_value = case
                when source_values.target = 'contact.email' then {{ normalize_email('source_values.source_value') }}
                else source_values.source_value
            end
),

first_match as (
    select distinct on (matches.connection_id, matches.message_id)
        matches.connection_id,
        matches.message_id,
        matches.account_id,
        matches.contact_id,
        matches.rule_name
    from matches
    order by
        matches.connection_id,
        matches.message_id,
        {{ rule_precedence('matches') }}
),

final as (
    select
        with_sources.org_id,
        with_sources.connection_id,
        with_sources.message_id,
        with_sources.event_type,
        with_sources.event_name,
        with_sources.stitched_user_id as user_id,
        with_sources.anonymous_id,
        with_sources.group_source as external_group_id,
        with_sources.email_source as email,
        with_sources.event_at,
        with_sources.event_date,
        with_sources.reported_event_at,
        with_sources.received_at,
        first_match.account_id,
        first_match.contact_id,
        first_match.rule_name as matched_by,
        with_sources.properties
    from with_sources
    left join first_match
        on
            with_sources.connection_id = first_match.connection_id
            and with_sources.message_id = first_match.message_id
)

select * from final
