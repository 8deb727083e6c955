{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[
            {'columns': ['connection_id', 'message_id'], 'unique': True},
            {'columns': ['batch_at']},
            {'columns': ['loaded_at']},
            {'columns': ['org_id', 'user_key', 'event_type', 'event_at']},
            {'columns': ['connection_id', 'received_at']},
            {'columns': ['event_date']},
        ],
        post_hook="analyze {{ this }}",
    )
}}

with source as (
    select * from {{ source('raw', 'segment_events') }}
    {% if is_incremental() %}
        -- new arrivals, looking back a little for transactions that committed out of order
        where
            loaded_at > {{ timestamp_literal('select max(loaded_at) from ' ~ this) }}
            - interval '{{ var("lookback_minutes") }} minutes'
    {% endif %}
),

parsed as (
    select
        -- ids
        source.connection_id,
        source.org_id,
        source.message_id,
        source.event_type,
        {{ event_name('source.event_type', json_text("source.payload ->> 'event'")) }} as event_name,
        {{ json_text("source.payload ->> 'userId'") }} as user_id,
        {{ json_text("source.payload ->> 'anonymousId'") }} as anonymous_id,
        coalesce(
            {{ json_text("source.payload ->> 'groupId'") }},
            {{ json_text("source.payload -> 'context' ->> 'groupId'") }}
        ) as external_group_id,
        coalesce(
            {{ normalize_email("source.payload -> 'traits' ->> 'email'") }},
            {{ normalize_email("source.payload -> 'context' -> 'traits' ->> 'email'") }},
            {{ normalize_email("source.payload -> 'properties' ->> 'email'") }}
        ) as email,
        -- timestamps
        coalesce(
            {{ parse_timestamp("source.payload ->> 'timestamp'") }},
            {{ parse_timestamp("source.payload ->> 'originalTimestamp'") }},
            {{ parse_timestamp("source.payload ->> 'sentAt'") }},
            {{ parse_timestamp("source.payload ->> 'receivedAt'") }},
            source.received_at
        ) as event_at,
        source.received_at,
        source.loaded_at,
        -- documents
        source.payload -> 'properties' as properties,
        source.payload -> 'traits' as traits,
        source.payload
    from source
    {% if is_incremental() %}
        where not exists (
            select 1
            from {{ this }} as existing
            where
                existing.connection_id = source.connection_id
                and existing.message_id = source.message_id
        )
    {% endif %}
),

final as (
    select
        parsed.connection_id,
        parsed.org_id,
        parsed.message_id,
        parsed.event_type,
        parsed.event_name,
        parsed.user_id,
        parsed.anonymous_id,
        coalesce(parsed.user_id, parsed.anonymous_id) as user_key,
        parsed.external_group_id,
        parsed.email,
        parsed.event_at,
        (parsed.event_at at time zone 'UTC')::date as event_date,
        parsed.received_at,
        parsed.loaded_at,
        now() as batch_at,
        parsed.properties,
        parsed.traits,
        parsed.payload
    from parsed
)

select * from final
