{% macro generate_schema_name(custom_schema_name, node) -%}
    {#-
        The production target (`default`, what Airflow and the CLI run) writes the folder schemas
        as they are (staging, intermediate, analytics, seeds); any other target prefixes them with
        its own schema (target dev: dev_staging, dev_analytics, ...), so a developer's build never
        writes production tables.
    -#}
    {%- if not custom_schema_name -%}
        {{ target.schema }}
    {%- elif target.name == 'default' -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
