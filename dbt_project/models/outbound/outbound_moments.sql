-- Moments: track calls for what happened to an account, each occurrence sent once (its
-- occurrence_key is part of the deterministic messageId).
--   Account Went Quiet   no allowlisted event for 14 days (once per quiet spell: keyed by the last event)
with usage as (
    select
        indicators.org_id,
        indicators.account_id,
        max(indicators.last_seen_at) as last_seen_at
    from {{ ref('account_indicators') }} as indicators
    where indicators.account_id is not null
    group by
        indicators.org_id,
        indicators.account_id
),

final as (
    select
        usage.org_id,
        usage.account_id,
        'Account Went Quiet' as moment,
        usage.account_id
        || '@'
        || to_char(usage.last_seen_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') as occurrence_key,
        jsonb_build_object('account_id', usage.account_id, 'last_seen_at', usage.last_seen_at) as properties
    from usage
    where usage.last_seen_at <= {{ as_of() }} - interval '14 days'
)

select * from final
