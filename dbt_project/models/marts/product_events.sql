{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        pre_hook="{{ forget_batch_events() }}",
        indexes=[
            {'columns': ['connection_id', 'message_id'], 'unique': True},
            {'columns': ['org_id', 'event_date']},
            {'columns': ['org_id', 'user_id', 'event_at']},
            {'columns': ['org_id', 'account_id', 'event_name', 'event_at']},
            {'columns': ['event_at']},
        ],
        post_hook=[
            "{{ index_where(this, ['org_id', 'user_id', 'event_at'], 'contact_id is not null') }}",
            "{{ index_where(this, ['org_id', 'user_id', 'event_at'], 'account_id is not null') }}",
            "{{ index_where(this, ['org_id', 'anonymous_id', 'event_at'], 'user_id is null') }}",
            "analyze {{ this }}",
            "{{ set_watermark('(' ~ watermark_query('int_identity__resolved_batch') ~ ')') }}",
        ]
    )
}}
-- One row per distinct allowlisted event, with the account and contact identity resolution
-- gave it. Each run replaces the rows of its batch (new events and the re-resolved ones) and
-- records as consumed what that batch covered, never more.
{{ assert_resolution_follows(own_watermark()) }}
with resolved as (
    select * from {{ ref('int_identity__resolved_batch') }}
),

allowlist as (
    select * from {{ ref('stg_control__allowlist') }}
),

final as (
    select
        resolved.org_id,
        resolved.connection_id,
        resolved.message_id,
        resolved.event_type,
        resolved.event_name,
        resolved.user_id,
        resolved.anonymous_id,
        resolved.external_group_id,
        resolved.email,
        resolved.event_at,
        resolved.event_date,
        resolved.reported_event_at,
        resolved.received_at,
        resolved.account_id,
        resolved.contact_id,
        resolved.matched_by,
        resolved.properties
    from resolved
    inner join allowlist
        on
            resolved.connection_id = allowlist.connection_id
            and resolved.event_name = allowlist.event_name
)

select * from final
