{{ config(materialized='table') }}
-- Health score 0-100 per account of the host product (and per account seen in events), at as_of.
-- Each component is its 30-day measure over its target, capped at 1; the score is the
-- weighted mean of the components times 100 (weights and targets: seed health_weights):
--   activity  allowlisted events in the last 30 days
--   breadth   distinct event names used in the last 30 days
--   users     distinct active users in the last 30 days
--   recency   1 - days since the last event / target (0 when never seen)
--   engagement  days with an allowlisted event in the last 30 days (UTC days; stickiness). Its
--               default weight is 0, so the score is as it was without it until an analyst weighs it
with accounts as (
    select * from {{ ref('stg_app__accounts') }}
),

weights as (
    select * from {{ ref('health_weights') }}
),

-- the last 30 days only (so the cost follows the window, not the history)
usage as (
    select
        window_30d.org_id,
        window_30d.account_id,
        sum(window_30d.events_30d) as events_30d,
        count(distinct window_30d.event_name) as event_names_30d,
        count(distinct window_30d.user_key) as users_30d,
        count(distinct window_30d.event_date) as active_days_30d
    from {{ ref('int_usage__window_30d') }} as window_30d
    where window_30d.account_id is not null
    group by
        window_30d.org_id,
        window_30d.account_id
),

last_seen as (
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

all_accounts as (
    select
        accounts.org_id,
        accounts.account_id
    from accounts
    union
    select
        last_seen.org_id,
        last_seen.account_id
    from last_seen
),

measures as (
    select
        all_accounts.org_id,
        all_accounts.account_id,
        coalesce(usage.events_30d, 0) as activity,
        coalesce(usage.event_names_30d, 0) as breadth,
        coalesce(usage.users_30d, 0) as users,
        coalesce(usage.active_days_30d, 0) as engagement,
        extract(epoch from {{ as_of() }} - last_seen.last_seen_at) / 86400.0 as days_since_seen
    from all_accounts
    left join usage
        on
            all_accounts.org_id = usage.org_id
            and all_accounts.account_id = usage.account_id
    left join last_seen
        on
            all_accounts.org_id = last_seen.org_id
            and all_accounts.account_id = last_seen.account_id
),

components as (
    select
        measures.org_id,
        measures.account_id,
        weights.weight,
        case weights.component
            when 'activity' then least(1.0, measures.activity / weights.target)
            when 'breadth' then least(1.0, measures.breadth / weights.target)
            when 'users' then least(1.0, measures.users / weights.target)
            when 'engagement' then least(1.0, measures.engagement / weights.target)
            when 'recency' then coalesce(greatest(0.0, 1.0 - measures.days_since_seen / weights.target), 0.0)
        end as score
    from measures
    cross join weights
),

final as (
    select
        components.org_id,
        components.account_id,
        round(100 * sum(components.weight * components.score) / sum(components.weight), 2) as health_score,
        {{ as_of() }} as computed_at
    from components
    group by
        components.org_id,
        components.account_id
)

select * from final
