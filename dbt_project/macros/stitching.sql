{% macro linked_user(org, anonymous_id, alias, batch_at_most=none) -%}
    {#-
        A lateral look-up: the userId an anonymousId of an org is linked to, by the first call
        that linked them (docs/identity.md#anonymous-users): the oldest identify carrying both
        ids, or alias from it (previousId) to a userId, in event time, then arrival, then id.
        The first link wins, so a later login on a shared device does not take over the earlier
        visitor's history. Optionally as of earlier batches (batch_at_most), to tell when a
        batch changed a link. Reads stg_segment__events through its partial linked_anonymous_id index.
    -#}
    select {{ alias }}.user_id
    from {{ ref('stg_segment__events') }} as {{ alias }}
    where
        {{ alias }}.linked_anonymous_id is not null
        and {{ alias }}.org_id = {{ org }}
        and {{ alias }}.linked_anonymous_id = {{ anonymous_id }}
        {% if batch_at_most %}and {{ alias }}.batch_at <= {{ batch_at_most }}{% endif %}
    order by {{ oldest_first(alias) }}
    limit 1
{%- endmacro %}
