{% macro create_meta_tables() %}
    {#-
        The incremental models' watermarks: for each model, the newest staging batch it has
        processed. Written by the model's post-hook inside its own transaction, so a failed
        run leaves it where it was and the next run catches up.
    -#}
    create schema if not exists segment_meta;
    create table if not exists segment_meta.watermarks (
        model text primary key,
        high_water timestamptz not null
    );
    create or replace function segment_meta.try_timestamptz(value text)
    returns timestamptz language plpgsql immutable as $fn$
    begin
        return value::timestamptz;
    exception when others then
        return null;
    end $fn$;
{% endmacro %}

{% macro watermark(model) -%}
    {#- The newest staging batch `model` has processed ('-infinity' before its first run). -#}
    {%- if execute and adapter.get_relation(target.database, 'segment_meta', 'watermarks') is not none -%}
        {{ timestamp_literal("select max(high_water) from segment_meta.watermarks where model = '" ~ model ~ "'") }}
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
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

{% macro set_watermark(model, relation, column) -%}
    {#- Post-hook: advance `model`'s watermark to the newest `column` of `relation`. -#}
    insert into segment_meta.watermarks (model, high_water)
    select '{{ model }}', max({{ column }}) from {{ relation }} having max({{ column }}) is not null
    on conflict (model) do update set high_water = greatest(segment_meta.watermarks.high_water, excluded.high_water)
{%- endmacro %}

{% macro index_where(relation, columns, predicate) -%}
    {#- A partial index (dbt's `indexes` config has no WHERE): created once, kept across incremental runs. -#}
    {%- set name = relation.identifier ~ '_' ~ local_md5(columns | join(',') ~ predicate)[:12] -%}
    create index if not exists "{{ name }}" on {{ relation }} ({{ columns | join(', ') }}) where {{ predicate }}
{%- endmacro %}
