{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['org_id', 'subject_type', 'subject_id'],
        indexes=[{'columns': ['org_id', 'subject_type', 'subject_id']}],
        post_hook=[
            "analyze {{ this }}",
            "{{ set_watermark('(select max(batch_at) from ' ~ ref('stg_segment__events') ~ ')') }}",
        ]
    )
}}
-- The newest traits of every user (identify calls, by userId) and group id (group calls), kept as
-- state so that user_traits and account_traits cost follows the new calls, not the history.
-- One row per subject and trait key with that key's newest value (the newest value per key wins),
-- plus one row with a null trait_key for the subject's newest call itself. Each run merges the
-- calls staged since its watermark with the rows already kept for their subjects.
with events as not materialized (
    select * from {{ ref('stg_segment__events') }}
    {% if is_incremental() %}
        -- the calls staged since the last run
        where batch_at > {{ own_watermark() }}
    {% endif %}
),

-- identify calls carry a user's traits (by userId), group calls a group's (by groupId)
calls as (
    select
        events.org_id,
        case when events.event_type = 'identify' then 'user' else 'group' end as subject_type,
        case when events.event_type = 'identify' then events.user_id else events.external_group_id end as subject_id,
        events.connection_id,
        events.message_id,
        events.event_at,
        events.received_at,
        events.traits
    from events
    where
        (events.event_type = 'identify' and events.user_id is not null)
        or (events.event_type = 'group' and events.external_group_id is not null)
),

new_rows as (
    select
        calls.org_id,
        calls.subject_type,
        calls.subject_id,
        null::text as trait_key,
        null::jsonb as trait_value,
        calls.connection_id,
        calls.message_id,
        calls.event_at,
        calls.received_at
    from calls
    union all
    select
        calls.org_id,
        calls.subject_type,
        calls.subject_id,
        traits.key as trait_key,
        traits.value as trait_value,
        calls.connection_id,
        calls.message_id,
        calls.event_at,
        calls.received_at
    from calls
    cross join
        lateral jsonb_each(
            case when jsonb_typeof(calls.traits) = 'object' then calls.traits else '{}'::jsonb end
        ) as traits
),

{% if is_incremental() %}
    candidates as (
        select * from new_rows
        union all
        select
            kept.org_id,
            kept.subject_type,
            kept.subject_id,
            kept.trait_key,
            kept.trait_value,
            kept.connection_id,
            kept.message_id,
            kept.event_at,
            kept.received_at
        from {{ this }} as kept
        where exists (
            select 1
            from calls
            where
                calls.org_id = kept.org_id
                and calls.subject_type = kept.subject_type
                and calls.subject_id = kept.subject_id
        )
    ),
{% else %}
    candidates as (
        select * from new_rows
    ),
{% endif %}

final as (
    select distinct on (candidates.org_id, candidates.subject_type, candidates.subject_id, candidates.trait_key)
        candidates.org_id,
        candidates.subject_type,
        candidates.subject_id,
        candidates.trait_key,
        candidates.trait_value,
        candidates.connection_id,
        candidates.message_id,
        candidates.event_at,
        candidates.received_at
    from candidates
    order by
        candidates.org_id asc,
        candidates.subject_type asc,
        candidates.subject_id asc,
        candidates.trait_key asc,
        {{ newest_first('candidates') }}
)

select * from final
