with source as (
    select * from {{ source('control', 'allowlist') }}
),

renamed as (
    select
        source.connection_id,
        source.event_name
    from source
)

select * from renamed
