-- What identify calls carry for each identified user: computed traits (the account's health).
-- Audience memberships (models/audiences/, schema audiences) are added by the sync, which sends
-- a user's traits only when they changed since the last accepted send, and false for an
-- audience the user left.
with user_traits as (
    select * from {{ ref('user_traits') }}
),

health as (
    select * from {{ ref('account_health') }}
),

final as (
    select
        user_traits.org_id,
        user_traits.user_id,
        jsonb_strip_nulls(jsonb_build_object(
            'account_id', user_traits.account_id,
            'account_health_score', health.health_score
        )) as traits
    from user_traits
    left join health
        on
            user_traits.org_id = health.org_id
            and user_traits.account_id = health.account_id
)

select * from final
