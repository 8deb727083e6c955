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
    (select coalesce(max(high_water), '-infinity'::timestamptz) from segment_meta.watermarks where model = '{{ model }}')
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
