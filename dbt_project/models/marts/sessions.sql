{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ forget_changed_sessions() }}",
        indexes=[
            {'columns': ['org_id', 'user_key', 'session_number'], 'unique': True},
            {'columns': ['org_id', 'session_date']},
            {'columns': ['org_id', 'session_end']},
            {'columns': ['org_id', 'account_id', 'session_start']},
        ],
        post_hook=[
            "analyze {{ this }}",
            "{{ set_watermark(watermark('product_events')) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- depends_on: {{ ref('stg_segment__events') }}
-- One row per session: a user's track, page and screen calls in event-time order, a new session
-- after more than session_gap_minutes (var, default 30) without a call. Sessions are numbered per
-- user from 1 in time order, across runs. Each run recomputes, for the users of the calls queued
-- since its watermark, every session from the last one those calls cannot reach (see
-- forget_changed_sessions, its pre-hook), so late calls join, merge and split sessions exactly as a
-- full build would, and the cost follows how far back the changes reach, not the history.
{% if is_incremental() %}
    with changes as (
        {{ session_changes(own_watermark()) }}
    ),

    -- each changed user's last session left by the pre-hook: the new ones are numbered after it
    kept as (
        select
            changes.org_id,
            changes.user_key,
            coalesce(last_kept.session_end, '-infinity'::timestamptz) as kept_until,
            coalesce(last_kept.session_number, 0) as numbered_after
        from changes
        left join lateral (
            select
                earlier.session_end,
                earlier.session_number
            from {{ this }} as earlier
            where
                earlier.org_id = changes.org_id
                and earlier.user_key = changes.user_key
            order by earlier.session_number desc
            limit 1
        ) as last_kept on true
    ),

    calls as (
        select
            kept.org_id,
            kept.user_key,
            kept.numbered_after,
            identified.connection_id,
            identified.message_id,
            identified.event_type,
            identified.event_at,
            identified.received_at,
            identified.account_id,
            {{ session_page_name('identified') }} as page_name
        from kept
        cross join
            lateral (
                select product_events.*
                from {{ ref('product_events') }} as product_events
                where
                    product_events.org_id = kept.org_id
                    and product_events.user_id = kept.user_key
                    and product_events.event_at > kept.kept_until
                    and {{ is_session_call('product_events') }}
                -- a fence (offset 0, no limit: AM09 does not apply): one index range per user, never a join
                -- over all of product_events
                offset 0  -- noqa: AM09
            ) as identified
        union all
        -- the calls of a user without a userId, by anonymousId (product_events' partial index)
        select
            kept.org_id,
            kept.user_key,
            kept.numbered_after,
            anonymous.connection_id,
            anonymous.message_id,
            anonymous.event_type,
            anonymous.event_at,
            anonymous.received_at,
            anonymous.account_id,
            {{ session_page_name('anonymous') }} as page_name
        from kept
        cross join
            lateral (
                select product_events.*
                from {{ ref('product_events') }} as product_events
                where
                    product_events.org_id = kept.org_id
                    and product_events.user_id is null
                    and product_events.anonymous_id = kept.user_key
                    and product_events.event_at > kept.kept_until
                    and {{ is_session_call('product_events') }}
                offset 0  -- noqa: AM09
            ) as anonymous
    ),

{% else %}
    with calls as (
        select
            product_events.org_id,
            coalesce(product_events.user_id, product_events.anonymous_id) as user_key,
            0 as numbered_after,
            product_events.connection_id,
            product_events.message_id,
            product_events.event_type,
            product_events.event_at,
            product_events.received_at,
            product_events.account_id,
            {{ session_page_name('product_events') }} as page_name
        from {{ ref('product_events') }} as product_events
        where
            coalesce(product_events.user_id, product_events.anonymous_id) is not null
            and {{ is_session_call('product_events') }}
    ),
{% endif %}

gaps as (
    select
        calls.*,
        calls.event_at - lag(calls.event_at) over (
            partition by calls.org_id, calls.user_key
            order by {{ session_order('calls') }}
        ) as since_previous
    from calls
),

numbered as (
    select
        gaps.*,
        gaps.numbered_after + sum(
            case when gaps.since_previous is null or gaps.since_previous > {{ session_gap() }} then 1 else 0 end
        ) over (
            partition by gaps.org_id, gaps.user_key
            order by {{ session_order('gaps') }}
            rows unbounded preceding
        ) as session_number
    from gaps
),

final as (
    select
        numbered.org_id,
        numbered.user_key,
        numbered.session_number,
        min(numbered.event_at) as session_start,
        max(numbered.event_at) as session_end,
        (min(numbered.event_at) at time zone 'UTC')::date as session_date,
        extract(epoch from max(numbered.event_at) - min(numbered.event_at)) as duration_s,
        count(*) as event_count,
        -- the name of the session's first page or screen (see session_page_name)
        (array_agg(
            numbered.page_name
            order by {{ session_order('numbered') }}
        ) filter (where numbered.event_type in ('page', 'screen')))[1] as first_name,
        -- the account of the session's first call that resolved to one
        (array_agg(
            numbered.account_id
            order by {{ session_order('numbered') }}
        ) filter (where numbered.account_id is not null))[1] as account_id
    from numbered
    group by
        numbered.org_id,
        numbered.user_key,
        numbered.session_number
)

select * from final
