{{ config(materialized='table', indexes=[{'columns': ['org_id', 'account_id', 'feature']}]) }}
-- Feature adoption per account: for each feature (a named group of event names in the features
-- seed; an allowlisted event in no group is a feature of its own name) when the account's users
-- first and last used it, how many of them did, and whether that reaches the feature's min_users.
-- Read from int_usage__users (one row per account, event and user; resolved events only), so the
-- cost follows the users, not the history.
with usage as (
    select * from {{ ref('int_usage__users') }}
),

features as (
    select * from {{ ref('features') }}
),

catalog as (
    select distinct
        trim(features.feature) as feature,
        features.event_name,
        coalesce(nullif(trim(features.min_users), '')::integer, 1) as min_users
    from features
),

feature_uses as (
    select
        usage.org_id,
        usage.account_id,
        catalog.feature,
        catalog.min_users,
        usage.user_key,
        usage.first_at,
        usage.last_at
    from usage
    inner join catalog
        on usage.event_name = catalog.event_name
    union all
    select
        usage.org_id,
        usage.account_id,
        usage.event_name as feature,
        1 as min_users,
        usage.user_key,
        usage.first_at,
        usage.last_at
    from usage
    where not exists (
        select 1
        from catalog
        where catalog.event_name = usage.event_name
    )
),

final as (
    select
        feature_uses.org_id,
        feature_uses.account_id,
        feature_uses.feature,
        min(feature_uses.first_at) as first_used_at,
        max(feature_uses.last_at) as last_used_at,
        count(distinct feature_uses.user_key) as users,
        count(distinct feature_uses.user_key) >= max(feature_uses.min_users) as adopted
    from feature_uses
    group by
        feature_uses.org_id,
        feature_uses.account_id,
        feature_uses.feature
)

select * from final
