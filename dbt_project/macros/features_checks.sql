{#-
    The features seed's own tests (seeds/_seeds.yml), as identity_rules' are: each returns one
    `problem` per bad row, a sentence naming the file, the row (the header is row 1), the feature
    and the fix, printed in the dbt output too; they run before every model that reads the seed.
-#}

{% macro feature_rows(model) -%}
    {#- The seed's rows with their row number in the file (see identity_rule_rows). -#}
    select
        features.*,
        row_number() over (order by features.ctid) + 1 as file_row
    from {{ model }} as features
{%- endmacro %}

{% macro feature_label(model, alias) -%}
    {#- 'features.csv row 4 (feature Reporting, event Report Created): ' for the row `alias`. -#}
    '{{ model.identifier }}.csv row ' || {{ alias }}.file_row
    || ' (feature ' || coalesce(trim({{ alias }}.feature), '') || ', event ' || coalesce({{ alias }}.event_name, '') || '): '
{%- endmacro %}

{% test feature_rows_are_complete(model) %}
    {%- set problems -%}
        select
            {{ feature_label(model, 'features') }}
            || case
                when nullif(trim(features.feature), '') is null
                    then 'the feature is empty; name the feature this event belongs to'
                else 'the event_name is empty; write an event name as the marts show it (a track''s name, or $page, $screen)'
            end as problem
        from ({{ feature_rows(model) }}) as features
        where nullif(trim(features.feature), '') is null or nullif(features.event_name, '') is null
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}

{% test feature_min_users_are_whole_numbers(model) %}
    {%- set problems -%}
        select
            {{ feature_label(model, 'features') }}
            || 'min_users ''' || features.min_users || ''' is not a whole number of users, 1 or more;'
            || ' write how many of an account''s users must use the feature for it to count as adopted,'
            || ' or leave it empty for 1' as problem
        from ({{ feature_rows(model) }}) as features
        where nullif(trim(features.min_users), '') is not null and trim(features.min_users) !~ '^0*[1-9][0-9]{0,8}$'
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}

{% test feature_rows_agree(model) %}
    {%- set problems -%}
        with features as (
            {{ feature_rows(model) }}
        )

        select
            '{{ model.identifier }}.csv rows ' || string_agg(features.file_row::text, ', ' order by features.file_row)
            || ' (feature ' || trim(features.feature) || '): these rows give the feature different min_users ('
            || string_agg(distinct coalesce(nullif(trim(features.min_users), ''), 'empty'), ', ')
            || '); give every row of a feature the same one' as problem
        from features
        where nullif(trim(features.feature), '') is not null
        group by trim(features.feature)
        having count(distinct coalesce(nullif(trim(features.min_users), ''), '1')::text) > 1
        union all
        select
            '{{ model.identifier }}.csv rows ' || string_agg(features.file_row::text, ', ' order by features.file_row)
            || ' (feature ' || trim(features.feature) || ', event ' || features.event_name
            || '): the same event is listed twice for the feature; keep one row' as problem
        from features
        where nullif(trim(features.feature), '') is not null and features.event_name is not null
        group by trim(features.feature), features.event_name
        having count(*) > 1
    {%- endset -%}
    {{ print_problems(problems) }}
{% endtest %}
