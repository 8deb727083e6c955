{% macro parse_timestamp(expr) -%}
    {#-
        An ISO-8601 text as timestamptz, or null when it is missing or not a valid timestamp
        (no error, no special values such as 'now'). Naive times are UTC (dbt runs with PGTZ=UTC).
    -#}
    case
        when {{ expr }} ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}' and pg_input_is_valid({{ expr }}, 'timestamptz')
            then ({{ expr }})::timestamptz
    end
{%- endmacro %}

{% macro json_text(expr) -%}
    {#- A JSON value as text, with empty strings as null. -#}
    nullif({{ expr }}, '')
{%- endmacro %}

{% macro normalize_email(expr) -%}
    {#- Emails match case-insensitively and trimmed. -#}
    nullif(lower(trim({{ expr }})), '')
{%- endmacro %}

{% macro event_name(event_type, track_event) -%}
    {#- docs/tables.md#event-names-and-event-time: a track's event name; other calls as $page, $screen, ... -#}
    case {{ event_type }}
        when 'track' then {{ track_event }}
        when 'page' then '$page'
        when 'screen' then '$screen'
        when 'identify' then '$identify'
        when 'group' then '$group'
        when 'alias' then '$alias'
    end
{%- endmacro %}

{% macro plausible_event_at(reported, received) -%}
    {#-
        The event time the marts use: the time the payload reported, unless it is missing or
        implausible, outside [received - 5 years, received + var plausible_days_ahead] (a device clock at 0001,
        1970 or 2099), where the arrival time stands in. Older history imported with explicit
        timestamps stays; a clock far off does not become a real day in every mart.
    -#}
    case
        when {{ reported }} between {{ received }} - interval '5 years' and {{ received }} + interval '{{ var("plausible_days_ahead") | int }} days'
            then {{ reported }}
        else {{ received }}
    end
{%- endmacro %}
