{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['org_id', 'user_id'],
        post_hook="{{ set_watermark(watermark('product_events')) }}",
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- One row per identified user: identify traits merged (the newest value of each key wins, kept
-- per key in int_traits__latest), the latest email, and the contact and account of the user's
-- latest resolved event. Incremental: each run recomputes the users of the events queued since
-- its watermark that product_events has consumed; every look-up goes through an index, so the
-- cost follows those users, not the history (the contact and account ones through
-- product_events' partial indexes).
with latest as not materialized (
    select * from {{ ref('int_traits__latest') }}
),

{% if is_incremental() %}
    queued_events as (
        select
            events.org_id,
            events.user_id,
            events.anonymous_id
        from {{ ref('int_events__resolution_queue') }} as queue
        inner join {{ ref('stg_segment__events') }} as events
            on
                queue.connection_id = events.connection_id
                and queue.message_id = events.message_id
        where {{ queued_since('queue.queued_at', own_watermark()) }}
    ),

    -- the users of the queued events: their userId, or for an event without one every user its
    -- anonymousId was ever linked to (it may have moved from one to another: docs/identity.md#anonymous-users).
    -- Two branches, so that only events without a userId look up links: as one left join, every
    -- queued event read all the link rows of its anonymousId (each identify call of that user in
    -- history) before the join's filter dropped them, a cost that grew with the history.
    changed_users as (
        select
            queued_events.org_id,
            queued_events.user_id
        from queued_events
        where queued_events.user_id is not null
        union
        select
            queued_events.org_id,
            linking.user_id
        from queued_events
        inner join {{ ref('stg_segment__events') }} as linking
            on
                queued_events.org_id = linking.org_id
                and queued_events.anonymous_id = linking.linked_anonymous_id
        where
            queued_events.user_id is null
            and linking.user_id is not null
    ),
{% else %}
    changed_users as (
        select
            latest.org_id,
            latest.subject_id as user_id
        from latest
        where
            latest.subject_type = 'user'
            and latest.trait_key is null
    ),
{% endif %}

user_rows as (
    select latest.*
    from latest
    inner join changed_users
        on
            latest.org_id = changed_users.org_id
            and latest.subject_id = changed_users.user_id
    where latest.subject_type = 'user'
),

-- users with at least one identify call: their newest one
users as (
    select
        user_rows.org_id,
        user_rows.subject_id as user_id,
        user_rows.event_at as last_identified_at
    from user_rows
    where user_rows.trait_key is null
),

merged as (
    select
        user_rows.org_id,
        user_rows.subject_id as user_id,
        jsonb_object_agg(user_rows.trait_key, user_rows.trait_value) as traits
    from user_rows
    where user_rows.trait_key is not null
    group by
        user_rows.org_id,
        user_rows.subject_id
),

final as (
    select
        users.org_id,
        users.user_id,
        latest_email.email,
        latest_contact.contact_id,
        latest_account.account_id,
        coalesce(merged.traits, '{}'::jsonb) as traits,
        users.last_identified_at
    from users
    left join merged
        on
            users.org_id = merged.org_id
            and users.user_id = merged.user_id
    left join lateral (
        select identified.email
        from {{ ref('stg_segment__events') }} as identified
        where
            identified.event_type = 'identify'
            and identified.email is not null
            and identified.org_id = users.org_id
            and identified.user_key = users.user_id
            and identified.user_id = users.user_id
        order by {{ newest_first('identified') }}
        limit 1
    ) as latest_email on true
    left join lateral (
        select product_events.contact_id
        from {{ ref('product_events') }} as product_events
        where
            product_events.org_id = users.org_id
            and product_events.user_id = users.user_id
            and product_events.contact_id is not null
        order by {{ newest_first('product_events') }}
        limit 1
    ) as latest_contact on true
    left join lateral (
        select product_events.account_id
        from {{ ref('product_events') }} as product_events
        where
            product_events.org_id = users.org_id
            and product_events.user_id = users.user_id
            and product_events.account_id is not null
        order by {{ newest_first('product_events') }}
        limit 1
    ) as latest_account on true
)

select * from final
