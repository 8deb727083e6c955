{% macro generate_schema_name(custom_schema_name, node) -%}
    {#- Use folder schemas as they are (staging, intermediate, analytics), not prefixed with the target's. -#}
    {{ custom_schema_name | trim if custom_schema_name else target.schema }}
{%- endmacro %}
