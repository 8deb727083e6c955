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

{% macro resolution_starts_after() -%}
    {#-
        Where int_identity__resolved_batch's batch starts: after what product_events has consumed
        of the queue, or '-infinity' (resolve every staged event) on a full refresh and whenever
        product_events' table is missing or new, so that its full build gets every event.
    -#}
    {{ "'-infinity'::timestamptz" if flags.FULL_REFRESH else watermark('product_events') | trim }}
{%- endmacro %}

{% macro queue_end() -%}
    {#- How far the resolution queue reaches now: what a batch resolved now covers. -#}
    coalesce((select max(queue.queued_at) from {{ ref('int_events__resolution_queue') }} as queue), '-infinity')
{%- endmacro %}

{% macro assert_resolution_follows(position) -%}
    {#-
        Stops product_events before it writes when its resolved batch does not start at or before
        `position` (what it has consumed), e.g. when it is rebuilt alone after a batch was resolved
        for its old table: taking that batch as everything would lose the rest of history.
    -#}
    {%- if execute and adapter.get_relation(target.database, 'segment_meta', 'watermarks') is not none -%}
        {%- set check -%}
            select coalesce(({{ watermark_query('int_identity__resolved_batch', 'batch_after') }}) <= {{ position }}, false)
        {%- endset -%}
        {%- if not run_query(check).columns[0].values()[0] -%}
            {{ exceptions.raise_compiler_error(
                "product_events has consumed the resolution queue up to " ~ position
                ~ " but int_identity__resolved_batch was resolved for a later point; build them together:"
                ~ " dbt build -s int_identity__resolved_batch product_events (with the same flags)") }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{% macro queued_since(column, model_position, upstream=['product_events']) -%}
    {#-
        The queue rows a consumer of product_events has not consumed yet: after its own watermark,
        up to what product_events (or every model of `upstream` it reads) has consumed, so that
        running alone, before them, it never takes as done what they have not written yet.
    -#}
    {{ column }} > {{ model_position }} and {{ column }} <= {{ consumed_by(upstream) }}
{%- endmacro %}

{% macro consumed_by(upstream) -%}
    {#- How far every model of `upstream` has consumed the queue: the least of their watermarks. -#}
    {%- if upstream | length == 1 -%}
        {{ watermark(upstream[0]) }}
    {%- else -%}
        least({% for model in upstream %}{{ watermark(model) }}{{ ', ' if not loop.last }}{% endfor %})
    {%- endif -%}
{%- endmacro %}

{% macro affected_days(upstream=['product_events']) -%}
    {#-
        The (org, event day) pairs a per-day mart (account_event_daily, the identity resolution
        report) must recompute: those queued since its watermark that product_events has
        consumed. Read when the model runs and inlined as a VALUES list, so that PostgreSQL knows
        how few days they are and reads just those through product_events' (org_id, event_date)
        index (from a subquery it guesses hundreds and scans all of history).
    -#}
    {%- set days = [] -%}
    {%- if execute -%}
        {%- set found -%}
            select distinct queue.org_id, queue.event_date::text
            from {{ ref('int_events__resolution_queue') }} as queue
            where {{ queued_since('queue.queued_at', own_watermark(), upstream) }}
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

{% macro events_of_affected_days() -%}
    {#-
        The product_events rows a per-day mart aggregates: on an incremental run those of the
        days affected_days() gives, else all of them. Recomputing whole (org, day) pairs keeps
        late, duplicate and re-resolved events exact; such a mart has forget_affected_days() as
        its pre-hook, records watermark('product_events') as its own, and is a consumer in
        prune_resolution_queue().
    -#}
    {% if is_incremental() %}
    select product_events.*
    from {{ ref('product_events') }} as product_events
    inner join ({{ affected_days() }}) as affected
        on
            product_events.org_id = affected.org_id
            and product_events.event_date = affected.event_date
    {% else %}
    select * from {{ ref('product_events') }}
    {% endif %}
{%- endmacro %}

{% macro forget_affected_days() -%}
    {#- Pre-hook of a per-day mart: delete the days this run recomputes. -#}
    {% if is_incremental() %}
    delete from {{ this }} as target
    using ({{ affected_days() }}) as affected
    where target.org_id = affected.org_id
        and target.event_date = affected.event_date
    {% else %}
    select 1
    {% endif %}
{%- endmacro %}
