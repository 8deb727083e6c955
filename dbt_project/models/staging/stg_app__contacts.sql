with source as (
    select * from {{ source('app', 'contacts') }}
),

renamed as (
    select
        source.org_id,
        source.contact_id,
        source.account_id,
        {{ normalize_email('source.email') }} as email,
        source.product_external_user_id,
        coalesce(source.traits, '{}'::jsonb) as traits
    from source
)

select * from renamed
