{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['queued_at']}],
        post_hook=[
            "analyze {{ this }}",
            "{{ set_watermark('(select max(batch_at) from ' ~ ref('stg_segment__events') ~ ')') }}",
        ]
    )
}}
-- The events whose identity must be (re)resolved, appended per run: the new arrivals, every
-- stored event of a user whose group binding or latest identify email changed with them (so
-- stitching applies across history), the anonymous events of an anonymousId whose link to a
-- user changed or whose linked user changed, and the days or connection a rebuild or reconcile
-- asks for. product_events and the models after it (prune_resolution_queue lists them) each
-- consume it from their own watermark; a run's rows are deleted once all have, never by age.
-- `events` is inlined (not materialized) so that each use reads only the rows it needs through
-- the staging indexes; the lateral look-ups read stg_segment__events directly for the same reason.
with events as not materialized (
    select * from {{ ref('stg_segment__events') }}
),

{% if is_incremental() %}
    new_events as (
        select
            events.connection_id,
            events.message_id,
            events.org_id,
            events.event_date,
            events.event_type,
            events.user_key,
            events.external_group_id,
            events.email,
            events.linked_anonymous_id,
            events.event_at
        from events
        where events.batch_at > {{ own_watermark() }}
    ),

    new_group_calls as (
        select
            new_events.org_id,
            new_events.user_key,
            new_events.external_group_id,
            new_events.event_at
        from new_events
        where
            new_events.event_type = 'group'
            and new_events.external_group_id is not null
            and new_events.user_key is not null
    ),

    -- a group call changes bindings unless it names the group already in force at its time
    group_changes as (
        select distinct
            new_group_calls.org_id,
            new_group_calls.user_key
        from new_group_calls
        left join lateral (
            {{ user_call('group', 'external_group_id',
                         'new_group_calls.org_id', 'new_group_calls.user_key', 'earlier',
                         at_most='new_group_calls.event_at', batch_at_most=own_watermark()) }}
        ) as in_force on true
        left join lateral (
            {{ user_call('group', 'external_group_id',
                         'new_group_calls.org_id', 'new_group_calls.user_key', 'first_call',
                         batch_at_most=own_watermark(), oldest=true) }}
        ) as earliest on true
        where
            coalesce(in_force.external_group_id, earliest.external_group_id)
            is distinct from new_group_calls.external_group_id
    ),

    new_identified_users as (
        select distinct
            new_events.org_id,
            new_events.user_key
        from new_events
        where
            new_events.event_type = 'identify'
            and new_events.email is not null
            and new_events.user_key is not null
    ),

    -- an identify changes resolution only when the user's latest email changes
    email_changes as (
        select
            new_identified_users.org_id,
            new_identified_users.user_key
        from new_identified_users
        left join lateral (
            {{ user_call('identify', 'email',
                         'new_identified_users.org_id', 'new_identified_users.user_key', 'latest') }}
        ) as now_latest on true
        left join lateral (
            {{ user_call('identify', 'email',
                         'new_identified_users.org_id', 'new_identified_users.user_key', 'latest',
                         batch_at_most=own_watermark()) }}
        ) as before_latest on true
        where now_latest.email is distinct from before_latest.email
    ),

    new_linked_ids as (
        select distinct
            new_events.org_id,
            new_events.linked_anonymous_id
        from new_events
        where new_events.linked_anonymous_id is not null
    ),

    -- a linking call changes resolution only when the anonymousId's first link changes; then its
    -- anonymous events (user_key: the anonymousId) take the linked user
    link_changes as (
        select
            new_linked_ids.org_id,
            new_linked_ids.linked_anonymous_id as user_key
        from new_linked_ids
        left join lateral (
            {{ linked_user('new_linked_ids.org_id', 'new_linked_ids.linked_anonymous_id', 'linking') }}
        ) as now_linked on true
        left join lateral (
            {{ linked_user('new_linked_ids.org_id', 'new_linked_ids.linked_anonymous_id', 'linking',
                           batch_at_most=own_watermark()) }}
        ) as before_linked on true
        where now_linked.user_id is distinct from before_linked.user_id
    ),

    changed_by_calls as (
        select * from group_changes
        union
        select * from email_changes
    ),

    -- the anonymous events stitched to a user whose binding or email changed change with them
    stitched_followers as (
        select distinct
            changed_by_calls.org_id,
            calls.linked_anonymous_id as user_key
        from changed_by_calls
        inner join events as calls
            on
                changed_by_calls.org_id = calls.org_id
                and changed_by_calls.user_key = calls.user_key
                and calls.event_type in ('identify', 'alias')
        where calls.linked_anonymous_id is not null
    ),

    changed_users as (
        select * from changed_by_calls
        union
        select * from link_changes
        union
        select * from stitched_followers
    ),

    queued as (
        select
            new_events.connection_id,
            new_events.message_id,
            new_events.org_id,
            new_events.event_date
        from new_events
        union
        select
            events.connection_id,
            events.message_id,
            events.org_id,
            events.event_date
        from events
        inner join changed_users
            on
                events.org_id = changed_users.org_id
                and events.user_key = changed_users.user_key
        {% if var('rebuild_from') and var('rebuild_to') %}
    union
    select
        events.connection_id,
        events.message_id,
        events.org_id,
        events.event_date
    from events
    where events.event_date between {{ date_var('rebuild_from') }} and {{ date_var('rebuild_to') }}
    {% endif %}
        {% if var('reconcile_connection_id') %}
    union
    select
        events.connection_id,
        events.message_id,
        events.org_id,
        events.event_date
    from events
    where events.connection_id = {{ connection_var('reconcile_connection_id') }}
        {% if var('received_from') and var('received_to') %}
        and (events.received_at at time zone 'UTC')::date
        between {{ date_var('received_from') }} and {{ date_var('received_to') }}
        {% endif %}
    {% endif %}
    ),
{% else %}
    queued as (
        select
            events.connection_id,
            events.message_id,
            events.org_id,
            events.event_date
        from events
    ),
{% endif %}

final as (
    select
        queued.connection_id,
        queued.message_id,
        queued.org_id,
        queued.event_date,
        now() as queued_at
    from queued
)

select * from final
