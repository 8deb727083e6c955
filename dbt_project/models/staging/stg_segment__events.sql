{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['connection_id', 'message_id'], 'unique': True},
            {'columns': ['batch_at']},
            {'columns': ['loaded_at']},
            {'columns': ['org_id', 'user_key', 'event_type', 'event_at']},
            {'columns': ['connection_id', 'received_at']},
            {'columns': ['event_date']},
        ],
        post_hook=[
            "{{ index_where(this, ['org_id', 'linked_anonymous_id', 'event_at'], 'linked_anonymous_id is not null') }}",
            "analyze {{ this }}",
        ],
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
        {{ json_text("source.payload ->> 'previousId'") }} as previous_id,
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
            {{ parse_timestamp("source.payload ->> 'receivedAt'") }}
        ) as reported_event_at,
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

-- the reported time when it is plausible, else the arrival (see plausible_event_at)
timed as (
    select
        parsed.*,
        {{ plausible_event_at('parsed.reported_event_at', 'parsed.received_at') }} as event_at
    from parsed
),

final as (
    select
        timed.connection_id,
        timed.org_id,
        timed.message_id,
        timed.event_type,
        timed.event_name,
        timed.user_id,
        timed.anonymous_id,
        coalesce(timed.user_id, timed.anonymous_id) as user_key,
        -- the anonymousId this call links to its userId (docs/identity.md#anonymous-users)
        case
            when timed.user_id is null then null
            when timed.event_type = 'identify' then timed.anonymous_id
            when timed.event_type = 'alias' then timed.previous_id
        end as linked_anonymous_id,
        timed.external_group_id,
        timed.email,
        timed.event_at,
        (timed.event_at at time zone 'UTC')::date as event_date,
        timed.reported_event_at,
        timed.received_at,
        timed.loaded_at,
        now() as batch_at,
        timed.properties,
        timed.traits,
        timed.payload
    from timed
)

select * from final
