{% macro newest_first(alias) -%}
    {#- The order in which a user's calls supersede each other: newest event time, then arrival, then id
        (byte order, whatever the database's collation). -#}
    {{ alias }}.event_at desc, {{ alias }}.received_at desc, {{ alias }}.message_id collate "C" desc
{%- endmacro %}

{% macro oldest_first(alias) -%}
    {{ alias }}.event_at, {{ alias }}.received_at, {{ alias }}.message_id collate "C"
{%- endmacro %}
