{% macro date_var(name) -%}
    {#- A YYYY-MM-DD var as a SQL date literal; anything else stops the run with a clear error. -#}
    {%- set value = var(name) | string -%}
    {%- if not modules.re.match('^\d{4}-\d{2}-\d{2}$', value) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ " must be a date YYYY-MM-DD, got " ~ value) }}
    {%- endif -%}
    '{{ value }}'::date
{%- endmacro %}

{% macro connection_var(name) -%}
    {#- A connection id var as a SQL literal; anything but a connection id stops the run. -#}
    {%- set value = var(name) | string -%}
    {%- if not modules.re.match('^[A-Za-z0-9_-]{1,64}$', value) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ " must be a connection id, got " ~ value) }}
    {%- endif -%}
    '{{ value }}'
{%- endmacro %}

{% macro as_of() -%}
    {#- The time indicators and health are computed at: var as_of, else the run's start. -#}
    {%- if var('as_of') -%}
        {%- set value = var('as_of') | string -%}
        {%- if not modules.re.match('^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$', value) -%}
            {{ exceptions.raise_compiler_error("var as_of must be an ISO timestamp, got " ~ value) }}
        {%- endif -%}
        '{{ value }}'::timestamptz
    {%- else -%}
        now()
    {%- endif -%}
{%- endmacro %}

{% macro in_last_days(column, days) -%}
    {#- True when `column` falls in the window (as_of - days, as_of]; callers bound it by as_of. -#}
    {{ column }} > {{ as_of() }} - interval '{{ days }} days'
{%- endmacro %}

{% macro in_window_in_storage_order(column, days) -%}
    {#-
        True when `column` falls in (as_of - days, as_of], written as its two halves OR'ed: the
        same rows, but PostgreSQL reads an OR of ranges only through a bitmap of the index, which
        visits the table's pages in storage order, each once. One range it may read along the
        index instead, a random page per row, which costs once the table outgrows memory: the
        30-day window of 20M events took 3.5-5.5 s that way, 1.3-1.6 s through the bitmap.
    -#}
    (
        ({{ in_last_days(column, days) }} and {{ column }} <= {{ as_of() }} - interval '{{ days // 2 }} days')
        or ({{ in_last_days(column, days // 2) }} and {{ column }} <= {{ as_of() }})
    )
{%- endmacro %}
