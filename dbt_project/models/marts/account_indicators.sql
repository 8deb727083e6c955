{{ config(materialized='table') }}
-- Usage indicators per account and event name, relative to as_of (var; default now):
-- windows are (as_of - N days, as_of]. Its cost follows the last 30 days and the number of
-- groups, not the history: the counts read int_usage__window_30d, and each group's
-- last_seen_at is one backward step of product_events' (org_id, account_id, event_name, event_at)
-- index. (The unresolved group, account_id null, takes the loop's second branch: `account_id is
-- null` is an index condition, `is not distinct from` is not.)
with daily as (
    select * from {{ ref('account_event_daily') }}
),

groups as (
    select distinct
        daily.org_id,
        daily.account_id,
        daily.event_name
    from daily
    where daily.event_date <= ({{ as_of() }} at time zone 'UTC')::date
),

last_seen as (
    {% for resolved in [true, false] %}
        {% if not loop.first %}union all{% endif %}
        select
            groups.org_id,
            groups.account_id,
            groups.event_name,
            newest.event_at as last_seen_at
        from groups
        cross join
            lateral (
                select product_events.event_at
                from {{ ref('product_events') }} as product_events
                where
                    product_events.org_id = groups.org_id
                    and {{ 'product_events.account_id = groups.account_id' if resolved
                           else 'product_events.account_id is null' }}
                    and product_events.event_name = groups.event_name
                    and product_events.event_at <= {{ as_of() }}
                order by product_events.event_at desc
                limit 1
            ) as newest
        where groups.account_id is {{ 'not null' if resolved else 'null' }}
    {% endfor %}
),

-- The window's people per group, counted in hash tables (a sorted count(distinct) would sort
-- every row of the window).
window_people as (
    select
        usage.org_id,
        usage.account_id,
        usage.event_name,
        usage.user_key,
        sum(usage.events_7d) as events_7d,
        sum(usage.events_30d) as events_30d
    from {{ ref('int_usage__window_30d') }} as usage
    group by
        usage.org_id,
        usage.account_id,
        usage.event_name,
        usage.user_key
),

window_30d as (
    select
        window_people.org_id,
        window_people.account_id,
        window_people.event_name,
        sum(window_people.events_7d)::bigint as events_7d,
        sum(window_people.events_30d)::bigint as events_30d,
        count(window_people.user_key) filter (where window_people.events_7d > 0) as active_users_7d,
        count(window_people.user_key) as active_users_30d
    from window_people
    group by
        window_people.org_id,
        window_people.account_id,
        window_people.event_name
),

final as (
    select
        last_seen.org_id,
        last_seen.account_id,
        last_seen.event_name,
        coalesce(window_30d.events_7d, 0) as events_7d,
        coalesce(window_30d.events_30d, 0) as events_30d,
        coalesce(window_30d.active_users_7d, 0) as active_users_7d,
        coalesce(window_30d.active_users_30d, 0) as active_users_30d,
        last_seen.last_seen_at
    from last_seen
    left join window_30d
        on
            last_seen.org_id = window_30d.org_id
            and last_seen.account_id is not distinct from window_30d.account_id
            and last_seen.event_name = window_30d.event_name
)

select * from final
