{{
    config(
        materialized='table',
        indexes=[{'columns': ['org_id', 'target', 'key_value']}],
        post_hook="analyze {{ this }}",
    )
}}
-- Every value an identity rule can match, by target: accounts' ids and traits, contacts' user
-- ids, emails (lowercased, trimmed) and traits. Where two entities of an org share a value,
-- the smallest id wins, so a match is always deterministic.
with accounts as (
    select * from {{ ref('stg_app__accounts') }}
),

contacts as (
    select * from {{ ref('stg_app__contacts') }}
),

account_keys as (
    select
        accounts.org_id,
        keys.target,
        keys.key_value,
        accounts.account_id,
        null::text as contact_id
    from accounts
    cross join
        lateral (
            values
            ('account.external_id', accounts.external_id),
            ('account.ps_id', accounts.ps_id),
            ('account.vitally_id', accounts.vitally_id)
        ) as keys (target, key_value)
    union all
    select
        accounts.org_id,
        'account.trait:' || traits.key as target,
        traits.value as key_value,
        accounts.account_id,
        null::text as contact_id
    from accounts
    cross join lateral jsonb_each_text(
        case when jsonb_typeof(accounts.traits) = 'object' then accounts.traits else '{}'::jsonb end
    ) as traits
),

contact_keys as (
    select
        contacts.org_id,
        keys.target,
        keys.key_value,
        contacts.account_id,
        contacts.contact_id
    from contacts
    cross join
        lateral (
            values
            ('contact.product_external_user_id', contacts.product_external_user_id),
            ('contact.email', contacts.email)
        ) as keys (target, key_value)
    union all
    select
        contacts.org_id,
        'contact.trait:' || traits.key as target,
        traits.value as key_value,
        contacts.account_id,
        contacts.contact_id
    from contacts
    cross join lateral jsonb_each_text(
        case when jsonb_typeof(contacts.traits) = 'object' then contacts.traits else '{}'::jsonb end
    ) as traits
),

all_keys as (
    select * from account_keys
    union all
    select * from contact_keys
),

final as (
    select distinct on (all_keys.org_id, all_keys.target, all_keys.key_value)
        all_keys.org_id,
        all_keys.target,
        all_keys.key_value,
        all_keys.account_id,
        all_keys.contact_id
    from all_keys
    where all_keys.key_value is not null and all_keys.key_value <> ''
    order by
        all_keys.org_id,
        all_keys.target,
        all_keys.key_value,
        coalesce(all_keys.contact_id, all_keys.account_id) collate "C"
)

select * from final
