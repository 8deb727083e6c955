with source as (
    select * from {{ source('control', 'connections') }}
),

renamed as (
    select
        -- ids
        source.connection_id,
        source.org_id,
        -- timestamps
        source.deleted_at
    from source
)

select * from renamed
