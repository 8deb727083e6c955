{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['org_id', 'user_id'],
        post_hook="{{ set_watermark('user_traits', ref('int_events__resolution_queue'), 'queued_at') }}",
    )
}}
-- One row per identified user: identify traits merged (the newest value of each key wins),
-- the latest email, and the contact and account of the user's latest resolved event.
-- Incremental: each run recomputes the users of the events queued since its watermark.
-- The look-ups read the relations directly (not through import CTEs, which PostgreSQL
-- would materialize) so that they use the indexes.
with
{% if is_incremental() %}
    changed_users as (
        select distinct
            events.org_id,
            events.user_id
        from {{ ref('int_events__resolution_queue') }} as queue
        inner join {{ ref('stg_segment__events') }} as events
            on
                queue.connection_id = events.connection_id
                and queue.message_id = events.message_id
        where
            queue.queued_at > {{ watermark('user_traits') }}
            and events.user_id is not null
    ),

    identifies as (
        select events.*
        from changed_users
        inner join {{ ref('stg_segment__events') }} as events
            on
                changed_users.org_id = events.org_id
                and changed_users.user_id = events.user_key
                and changed_users.user_id = events.user_id
        where events.event_type = 'identify'
    ),
{% else %}
    identifies as (
        select events.*
        from {{ ref('stg_segment__events') }} as events
        where
            events.event_type = 'identify'
            and events.user_id is not null
    ),
{% endif %}

trait_values as (
    select distinct on (identifies.org_id, identifies.user_id, traits.key)
        identifies.org_id,
        identifies.user_id,
        traits.key,
        traits.value
    from identifies
    cross join
        lateral jsonb_each(
            case when jsonb_typeof(identifies.traits) = 'object' then identifies.traits else '{}'::jsonb end
        ) as traits
    order by
        identifies.org_id asc,
        identifies.user_id asc,
        traits.key asc,
        {{ newest_first('identifies') }}
),

merged as (
    select
        trait_values.org_id,
        trait_values.user_id,
        jsonb_object_agg(trait_values.key, trait_values.value) as traits
    from trait_values
    group by
        trait_values.org_id,
        trait_values.user_id
),

users as (
    select
        identifies.org_id,
        identifies.user_id,
        max(identifies.event_at) as last_identified_at
    from identifies
    group by
        identifies.org_id,
        identifies.user_id
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
