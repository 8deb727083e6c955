{% macro newest_first(alias) -%}
    {#- The order in which a user's calls supersede each other: newest event time, then arrival, then id
        (byte order, whatever the database's collation). -#}
    {{ alias }}.event_at desc, {{ alias }}.received_at desc, {{ alias }}.message_id collate "C" desc
{%- endmacro %}

{% macro oldest_first(alias) -%}
    {{ alias }}.event_at, {{ alias }}.received_at, {{ alias }}.message_id collate "C"
{%- endmacro %}

{% macro user_call(kind, value, org, user_key, alias, at_most=none, batch_at_most=none, oldest=false) -%}
    {#-
        A lateral look-up: `value` of a user's newest (or oldest) call of `kind`, e.g. their group
        binding (kind 'group', value external_group_id) or identify email (kind 'identify', value
        email), optionally as of an event time (at_most) or of earlier batches (batch_at_most).
        Reads stg_segment__events directly so its (org_id, user_key, event_type, event_at) index serves it.
    -#}
    select {{ alias }}.{{ value }}
    from {{ ref('stg_segment__events') }} as {{ alias }}
    where
        {{ alias }}.event_type = '{{ kind }}'
        and {{ alias }}.{{ value }} is not null
        and {{ alias }}.org_id = {{ org }}
        and {{ alias }}.user_key = {{ user_key }}
        {% if at_most %}and {{ alias }}.event_at <= {{ at_most }}{% endif %}
        {% if batch_at_most %}and {{ alias }}.batch_at <= {{ batch_at_most }}{% endif %}
    order by {{ oldest_first(alias) if oldest else newest_first(alias) }}
    limit 1
{%- endmacro %}

{% macro rule_precedence(alias) -%}
    {#-
        The order in which identity rules are tried, a total order so that the same event always
        gets the same match (in an incremental run and a rebuild alike): the account chain before
        the contact chain, then position, then, for rules sharing a position, the rule name
        (matched_by) in byte order. docs/identity.md#how-a-match-is-chosen.
    -#}
    {{ alias }}.chain_order, {{ alias }}.position, {{ alias }}.rule_name collate "C"
{%- endmacro %}
