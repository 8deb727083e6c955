{#-
    The identity_rules seed's own tests (seeds/_seeds.yml). Analysts edit the CSV, often in a
    spreadsheet, and a mistake there used to load without a word and never match. Each test
    returns one column, `problem`, one sentence per bad row that names the file, the row (as an
    editor or spreadsheet numbers it: the header is row 1), the rule and the fix; the sentences
    are also printed in the dbt output, above the test's result. Being tests of the seed, they
    run before every model that reads it, and a failing one skips those models.
-#}

{% macro identity_rule_vocabulary() -%}
    {#- One place for what a rule may say: the chains, the sources and the targets, as shown to an analyst. -#}
    {%- set fields = {
        'account': ['external_id', 'ps_id', 'vitally_id'],
        'contact': ['product_external_user_id', 'email'],
    } -%}
    {%- set targets, trait_targets, target_forms = [], [], [] -%}
    {%- for entity in ['account', 'contact'] -%}
        {%- for field in fields[entity] -%}
            {%- do targets.append(entity ~ '.' ~ field) -%}
            {%- do target_forms.append(entity ~ '.' ~ field) -%}
        {%- endfor -%}
        {%- do trait_targets.append(entity ~ '.trait:') -%}
        {%- do target_forms.append(entity ~ '.trait:<key>') -%}
    {%- endfor -%}
    {{ return({
        'chains': ['account', 'contact'],
        'sources': ['groupId', 'userId', 'anonymousId', 'email'],
        'targets': targets,
        'trait_targets': trait_targets,
        'target_forms': target_forms,
    }) }}
{%- endmacro %}

{% macro identity_rule_rows(model) -%}
    {#-
        The seed's rows with their row number in the file: a seed is loaded into a new or
        truncated table in file order, so physical order (ctid) is file order.
    -#}
    select
        rules.*,
        row_number() over (order by rules.ctid) + 1 as file_row
    from {{ model }} as rules
{%- endmacro %}

{% macro identity_rule_label(model, alias) -%}
    {#- 'identity_rules.csv row 4 (connection *, account, position 2): ' for the row `alias`. -#}
    '{{ model.identifier }}.csv row ' || {{ alias }}.file_row
    || ' (connection ' || coalesce({{ alias }}.connection_id, '') || ', ' || coalesce({{ alias }}.chain, '')
    || ', position ' || coalesce({{ alias }}.position::text, '') || '): '
{%- endmacro %}

{% macro sql_list(values) -%}
    {#- Python strings as an SQL list of literals. -#}
    ({% for value in values %}'{{ value }}'{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro print_problems(problems_sql) -%}
    {#-
        Prints each problem the test finds into the dbt output: dbt itself reports only how many
        rows failed, and an analyst needs the sentences.
    -#}
    {%- if execute -%}
        {%- for row in run_query(problems_sql).rows -%}
            {%- do log(row[0], info=True) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ problems_sql }}
{%- endmacro %}

{% test identity_rule_chains_are_known(model) %}
    {%- set vocabulary = identity_rule_vocabulary() -%}
    {%- set problems -%}
        select
            {{ identity_rule_label(model, 'rules') }}
            || 'unknown chain ''' || coalesce(rules.chain, '') || '''; valid chains: '
            || '{{ vocabulary.chains | join(", ") }}' as problem
        from ({{ identity_rule_rows(model) }}) as rules
        where rules.chain is null or rules.chain not in {{ sql_list(vocabulary.chains) }}
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}

{% test identity_rule_sources_are_known(model) %}
    {%- set vocabulary = identity_rule_vocabulary() -%}
    {%- set problems -%}
        select
            {{ identity_rule_label(model, 'rules') }}
            || case
                when trim(rules.source) like 'payload:%'
                    then 'source ''' || trim(rules.source) || ''' is not a payload path; write payload: then'
                    || ' the keys separated by single dots, without spaces, e.g. payload:properties.account_uuid'
                else 'unknown source ''' || coalesce(trim(rules.source), '') || '''; valid sources: '
                    || '{{ vocabulary.sources | join(", ") }}, payload:<dot.path>'
            end as problem
        from ({{ identity_rule_rows(model) }}) as rules
        where
            rules.source is null
            or (
                trim(rules.source) not in {{ sql_list(vocabulary.sources) }}
                and trim(rules.source) !~ '^payload:[^.[:space:]]+(\.[^.[:space:]]+)*$'
            )
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}

{% test identity_rule_targets_are_known(model) %}
    {%- set vocabulary = identity_rule_vocabulary() -%}
    {%- set problems -%}
        select
            {{ identity_rule_label(model, 'rules') }}
            || 'unknown target ''' || coalesce(trim(rules.target), '') || '''; valid targets: '
            || '{{ vocabulary.target_forms | join(", ") }}' as problem
        from ({{ identity_rule_rows(model) }}) as rules
        where
            rules.target is null
            or (
                trim(rules.target) not in {{ sql_list(vocabulary.targets) }}
                and not (
                    {%- for prefix in vocabulary.trait_targets %}
                        (trim(rules.target) like '{{ prefix }}_%'){{ ' or' if not loop.last }}
                    {%- endfor %}
                )
            )
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}

{% test identity_rule_positions_are_set_and_unique(model) %}
    {%- set problems -%}
        with rules as (
            {{ identity_rule_rows(model) }}
        )

        select
            {{ identity_rule_label(model, 'rules') }}
            || 'the position is empty; give each rule a whole-number position within its chain' as problem
        from rules
        where rules.position is null
        union all
        select
            '{{ model.identifier }}.csv rows ' || string_agg(rules.file_row::text, ', ' order by rules.file_row)
            || ' (connection ' || rules.connection_id || ', ' || rules.chain || ', position ' || rules.position
            || '): these rules share a position, so which one is tried first is not said;'
            || ' give each rule of a chain its own position' as problem
        from rules
        where rules.position is not null
        group by rules.connection_id, rules.chain, rules.position
        having count(*) > 1
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}

{% test identity_rule_connection_ids_are_set(model) %}
    {%- set problems -%}
        select
            {{ identity_rule_label(model, 'rules') }}
            || 'the connection_id is empty; write a connection id, or * for the default rules' as problem
        from ({{ identity_rule_rows(model) }}) as rules
        where rules.connection_id is null
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}

{% test identity_rule_connections_exist(model, connections) %}
    {#- A warning, not an error: rules may be written for a connection before it is created. -#}
    {{ config(severity='warn') }}
    {%- set problems -%}
        select
            {{ identity_rule_label(model, 'rules') }}
            || 'no connection has the id ''' || rules.connection_id || '''; these rules apply to no events'
            || ' until it exists (check the id with `segment-elt connections list`, or use * for the default rules)'
            as problem
        from ({{ identity_rule_rows(model) }}) as rules
        where
            rules.connection_id <> '*'
            and not exists (
                select 1 from {{ connections }} as connections
                where connections.connection_id = rules.connection_id
            )
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}
