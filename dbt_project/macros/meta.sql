{#-
    The incremental models' watermarks live in segment_meta.watermarks, a table of the versioned
    schema (segment_elt/control/schema.py, `segment-elt db upgrade`): for each model, how far it
    has consumed its input (staging batches, or the resolution queue's runs). Each is bound to the
    model's table by its oid, so a dropped, recreated or full-refreshed table starts again from
    nothing (see watermark()). Written by the model's post-hook inside its own transaction, so a
    failed run leaves it where it was and the next run catches up.
-#}

{% macro watermark_query(model, column='high_water') -%}
    {#-
        The recorded `column` of `model`'s watermark, if the table it was recorded for still
        exists: a dropped table takes its oid with it, and a rebuilt one (first run, recreated,
        --full-refresh) has a new oid.
    -#}
    select watermarks.{{ column }} from segment_meta.watermarks as watermarks
    where
        watermarks.model = '{{ model }}'
        and exists (select 1 from pg_class as tables where tables.oid = watermarks.relation_oid)
{%- endmacro %}

{% macro watermark(model) -%}
    {#-
        How far `model` has consumed its input ('-infinity' before its first run, and whenever its
        table is missing or was rebuilt since). Read from inside `model` only when it is
        incremental: a full build starts from nothing. Other models may read it as the bound of
        what `model` has finished, never as their own position.
    -#}
    {%- if execute and adapter.get_relation(target.database, 'segment_meta', 'watermarks') is not none -%}
        {{ timestamp_literal(watermark_query(model)) }}
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
{%- endmacro %}

{% macro own_watermark() -%}
    {#- The running model's own watermark: '-infinity' on a full build (first run, dropped table, --full-refresh). -#}
    {{ watermark(this.identifier) if is_incremental() else "'-infinity'::timestamptz" }}
{%- endmacro %}

{% macro timestamp_literal(query) -%}
    {#-
        The timestamp `query` returns ('-infinity' when null), read when the model runs and
        inlined as a literal: with a subquery in its place PostgreSQL cannot know how selective a
        bound such as "batch_at > watermark" is, guesses a third of the table and scans all of
        history, so a run's cost would grow with the history instead of the batch.
    -#}
    {%- set value = none -%}
    {%- if execute -%}
        {%- set value = run_query("select (" ~ query ~ ")::text").columns[0].values()[0] -%}
    {%- endif -%}
    '{{ value or "-infinity" }}'::timestamptz
{%- endmacro %}

{% macro set_watermark(position, batch_after='null') -%}
    {#-
        Post-hook: record that the running model has consumed its input up to `position` (an SQL
        expression; nothing is recorded when it is null), bound to the model's table as it is
        now. On the same table the watermark only moves forward; a new table replaces it.
    -#}
    insert into segment_meta.watermarks (model, relation_oid, high_water, batch_after)
    select '{{ this.identifier }}', '{{ this }}'::regclass::oid, consumed.position, {{ batch_after }}
    from (select {{ position }} as position) as consumed
    where consumed.position is not null
    on conflict (model) do update set
        high_water = case
            when segment_meta.watermarks.relation_oid = excluded.relation_oid
                then greatest(segment_meta.watermarks.high_water, excluded.high_water)
            else excluded.high_water
        end,
        relation_oid = excluded.relation_oid,
        batch_after = excluded.batch_after
{%- endmacro %}

{% macro prune_resolution_queue() -%}
    {#-
        on-run-end: delete the queue's runs that every consumer (product_events, the per-day marts,
        user_traits and sessions) has consumed, and only those. A consumer whose table is missing or new
        counts as having consumed nothing, so a consumer that fails for days keeps everything it
        has not read. At the end of the run, not in the queue's own post-hook: there
        the consumers have not yet read this run's batch, so a full build's whole queue would
        be deleted by the next incremental run, whose cost would then follow the history.
    -#}
    {%- set queue = graph.nodes.get('model.segment_elt.int_events__resolution_queue') if execute else none -%}
    {%- set relation = adapter.get_relation(queue.database, queue.schema, queue.alias) if queue else none -%}
    {%- if relation is not none -%}
    delete from {{ relation }}
    where queued_at <= least(
        {%- for consumer in ['product_events', 'account_event_daily', 'identity_resolution_report',
                             'identity_unresolved_values', 'user_traits', 'sessions',
                             'account_engagement_daily', 'int_usage__daily_users', 'int_usage__users'] %}
            {{ watermark(consumer) }}{{ ',' if not loop.last }}
        {%- endfor %}
    )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{% macro index_where(relation, columns, predicate) -%}
    {#- A partial index (dbt's `indexes` config has no WHERE): created once, kept across incremental runs. -#}
    {%- set name = relation.identifier ~ '_' ~ local_md5(columns | join(',') ~ predicate)[:12] -%}
    create index if not exists "{{ name }}" on {{ relation }} ({{ columns | join(', ') }}) where {{ predicate }}
{%- endmacro %}
