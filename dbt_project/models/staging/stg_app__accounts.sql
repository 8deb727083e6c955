with source as (
    select * from {{ source('app', 'accounts') }}
),

renamed as (
    select
        source.org_id,
        source.account_id,
        source.name,
        source.external_id,
        source.ps_id,
        source.vitally_id,
        coalesce(source.traits, '{}'::jsonb) as traits
    from source
)

select * from renamed
