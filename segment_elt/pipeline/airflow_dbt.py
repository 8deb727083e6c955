"""The dbt project as an astronomer-cosmos task group: one visible Airflow task per model and seed.

Mode, chosen by measuring (see README, "For data engineers"): LOCAL execution with the dbt
runner in-process (dbt shares the venv, no subprocess per model) and the graph loaded from the
manifest `dbt parse` writes (no dbt invocation at DAG parse time). All dbt tasks of all DAGs
share the pool `segment_dbt` of one slot, so two tasks never write at once; and each DAG's first
task opens the run's record only when no other writer (another run, an in-process build from the
CLI) holds the models, so nothing else lands between two model tasks of a run
(segment_elt.pipeline.runs.start_run).
"""

from __future__ import annotations

from pathlib import Path

from segment_elt.pipeline.transform import dbt_env
from segment_elt.settings import settings_while_parsing

POOL = "segment_dbt"


def manifest_path() -> Path:
    return settings_while_parsing().dbt_project_dir / "target" / "manifest.json"


def ensure_manifest() -> Path:
    """Write the dbt manifest the DAGs load their graph from (`dbt parse`, no database needed)."""
    from segment_elt.pipeline.transform import run_dbt

    run_dbt(["parse", "--quiet"])
    return manifest_path()


def _configs():
    """The project, profile and execution settings every dbt task of the DAGs shares."""
    from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig
    from cosmos.constants import ExecutionMode, InvocationMode

    from segment_elt.pipeline import dbt_patches

    dbt_patches.apply()  # in the task process too: it parses this DAG file before running the task

    current = settings_while_parsing()
    project, manifest = current.dbt_project_dir, manifest_path()
    if not manifest.exists():
        raise FileNotFoundError(
            f"{manifest} is missing: run `python -c 'from segment_elt.pipeline.airflow_dbt import "
            "ensure_manifest; ensure_manifest()'` (make up and make demo do it)"
        )
    return (
        ProjectConfig(
            dbt_project_path=project,
            manifest_path=manifest,
            env_vars=dbt_env(current.require_database_url()),
            partial_parse=True,
        ),
        ProfileConfig(
            profile_name="segment_elt", target_name="default", profiles_yml_filepath=project / "profiles.yml"
        ),
        ExecutionConfig(execution_mode=ExecutionMode.LOCAL, invocation_mode=InvocationMode.DBT_RUNNER),
    )


def dbt_task_group(group_id: str, vars_template: str):
    """The whole project as a DbtTaskGroup; `vars_template` renders to the run's dbt vars as JSON."""
    from cosmos import DbtTaskGroup, RenderConfig
    from cosmos.constants import LoadMode, TestBehavior

    project_config, profile_config, execution_config = _configs()
    return DbtTaskGroup(
        group_id=group_id,
        project_config=project_config,
        profile_config=profile_config,
        execution_config=execution_config,
        # No per-model assets: the DAGs publish one asset for the marts, and cosmos builds model
        # asset URIs from the profile's host, which a Unix-socket DATABASE_URL has not (cosmos
        # reads emit_datasets from RenderConfig only; an operator arg is overridden).
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.AFTER_ALL, emit_datasets=False
        ),
        operator_args={"vars": vars_template, "pool": POOL, "install_deps": False},
    )


def dbt_build_task(task_id: str, vars_template: str):
    """The whole project as one `dbt build` task: one task process per run instead of one per model
    (for runs that rebuild days, where Airflow's per-task start-up would cost more than the build)."""
    from cosmos import cache
    from cosmos.operators.local import DbtBuildLocalOperator

    project_config, profile_config, execution_config = _configs()
    return DbtBuildLocalOperator(
        task_id=task_id,
        # Without a cache dir (a task group gets one, a lone operator not) cosmos hands dbt no
        # partial parse state: each run parsed from scratch (bench_backfill: 30 s -> 23 s a day).
        cache_dir=cache._obtain_cache_dir_path(cache_identifier=f"segment_elt__{task_id}"),
        project_dir=str(project_config.dbt_project_path),
        manifest_filepath=str(project_config.manifest_path),
        env=project_config.env_vars,
        partial_parse=True,
        profile_config=profile_config,
        invocation_mode=execution_config.invocation_mode,
        vars=vars_template,
        pool=POOL,
        install_deps=False,
        emit_datasets=False,
    )
