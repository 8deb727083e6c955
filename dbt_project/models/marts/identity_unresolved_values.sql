{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ forget_affected_days() }}",
        indexes=[{'columns': ['connection_id', 'event_date']}],
        post_hook=[
            "{{ set_watermark(watermark('product_events')) }}",
        ]
    )
}}
-- depends_on: {{ ref('int_events__resolution_queue') }}
-- The values the account and contact rules look up, as the events no rule matched carried them:
-- per connection, UTC day, kind (groupId, userId, email: the rules' source names) and value,
-- the events and the newest of them. The ones with most events are the entities worth importing
-- or the rules worth adding. Recomputed per (org, day) like identity_resolution_report.
with scoped as (
    {{ events_of_affected_days() }}
),

unresolved as (
    select * from scoped
    where scoped.matched_by is null
),

looked_up as (
    {% for kind, column in [('groupId', 'external_group_id'), ('userId', 'user_id'), ('email', 'email')] %}
        {% if not loop.first %}union all{% endif %}
        select
            unresolved.org_id,
            unresolved.connection_id,
            unresolved.event_date,
            '{{ kind }}' as kind,
            unresolved.{{ column }} as value,
            unresolved.event_at
        from unresolved
        where unresolved.{{ column }} is not null
    {% endfor %}
),

final as (
    select
        looked_up.org_id,
        looked_up.connection_id,
        looked_up.event_date,
        looked_up.kind,
        looked_up.value,
        count(*) as event_count,
        max(looked_up.event_at) as last_seen_at
    from looked_up
    group by
        looked_up.org_id,
        looked_up.connection_id,
        looked_up.event_date,
        looked_up.kind,
        looked_up.value
)

select * from final
