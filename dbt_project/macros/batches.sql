{% macro forget_batch_events() -%}
    {#-
        Pre-hook of product_events: delete the rows this run recomputes (its batch), so events
        that left the allowlist or changed account are replaced, never duplicated.
    -#}
    {% if is_incremental() %}
    delete from {{ this }} as target
    using {{ ref('int_identity__resolved_batch') }} as batch
    where target.connection_id = batch.connection_id
        and target.message_id = batch.message_id
    {% else %}
    select 1
    {% endif %}
{%- endmacro %}

{% macro affected_days() -%}
    {#-
        The (org, event day) pairs account_event_daily must recompute: those queued since its
        watermark. Read when the model runs and inlined as a VALUES list, so that PostgreSQL
        knows how few days they are and reads just those through product_events' (org_id,
        event_date) index (from a subquery it guesses hundreds and scans all of history).
    -#}
    {%- set days = [] -%}
    {%- if execute -%}
        {%- set found -%}
            select distinct queue.org_id, queue.event_date::text
            from {{ ref('int_events__resolution_queue') }} as queue
            where queue.queued_at > {{ watermark('account_event_daily') }}
        {%- endset -%}
        {%- set days = run_query(found).rows -%}
    {%- endif -%}
    select affected.org_id, affected.event_date::date as event_date
    from (values
        {%- for day in days %}
            ('{{ day[0] | replace("'", "''") }}', '{{ day[1] }}'),
        {%- endfor %}
        (null, null)
    ) as affected (org_id, event_date)
    where affected.org_id is not null
{%- endmacro %}

{% macro forget_affected_days() -%}
    {#- Pre-hook of account_event_daily: delete the days this run recomputes. -#}
    {% if is_incremental() %}
    delete from {{ this }} as target
    using ({{ affected_days() }}) as affected
    where target.org_id = affected.org_id
        and target.event_date = affected.event_date
    {% else %}
    select 1
    {% endif %}
{%- endmacro %}
