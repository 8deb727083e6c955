"""The dbt project in a DAG: one `dbt build` task, and one task per model and seed that shows its result.

`dbt_build` runs the whole project in-process in one task (segment_elt.pipeline.dbt_build), so a
run pays Airflow's task start-up once, not once per model. Each model, seed and snapshot also has
a task of its own, grouped by folder (`dbt.marts.account_health`): it starts in the triggerer,
never on a worker, once the build is over, and ends as the node and its tests did in that build,
its log holding dbt's message. docs/dags.md, "How a run builds dbt", has the reference.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseOperator, TaskGroup
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent

from segment_elt.pipeline.transform import manifest_path

POOL = "segment_dbt"
BUILD_TASK = "dbt_build"
_TRIGGER = f"{__name__}.DbtNodeTrigger"


def ensure_manifest():
    """Write the dbt manifest the DAGs draw their model tasks from (`dbt parse`, no database needed)."""
    from segment_elt.pipeline.transform import run_dbt

    run_dbt(["parse", "--quiet"])
    return manifest_path()


class DbtBuildOperator(BaseOperator):
    """One `dbt build` of the whole project with the run's vars (a JSON template); a retry rebuilds
    only what an earlier attempt did not finish. Fails with one line naming what failed. After a
    successful build, `on_success(context, figures)` (e.g. closing the run's record) runs in the
    same task, saving a task start-up."""

    template_fields = ("dbt_vars",)
    ui_color = "#ff694b"

    def __init__(self, *, dbt_vars: str, on_success: Callable[[Any, dict], dict] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.dbt_vars = dbt_vars
        self.on_success = on_success

    def execute(self, context: Any) -> dict:
        from segment_elt.pipeline import dbt_build

        dbt_vars = json.loads(self.dbt_vars) if isinstance(self.dbt_vars, str) else dict(self.dbt_vars or {})
        ti = context["ti"]
        built = dbt_build.build(self.dag_id, context["dag_run"].run_id, ti.try_number, dbt_vars, manifest_path())
        return self.on_success(context, built) if self.on_success else built


class DbtNodeTrigger(BaseTrigger):
    """Ends a node's task as the node fared in the run's build (read from control.dbt_node_results)."""

    def __init__(self, node: list[str], dag_id: str | None = None, run_id: str | None = None) -> None:
        super().__init__()
        self.node, self.dag_id, self.run_id = node, dag_id, run_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return _TRIGGER, {"node": self.node, "dag_id": self.dag_id, "run_id": self.run_id}

    async def run(self) -> AsyncIterator:
        dag_id, run_id = self.dag_id, self.run_id
        if dag_id is None or run_id is None:  # started by the triggerer, which sets the task instance
            assert self.task_instance is not None
            dag_id, run_id = self.task_instance.dag_id, self.task_instance.run_id
        verdict = await asyncio.to_thread(_verdict, dag_id, run_id, self.node)
        for line in verdict.lines:
            self.log.info("%s", line)
        event = {"success": TaskSuccessEvent, "failed": TaskFailedEvent, "skipped": TaskSkippedEvent}[verdict.state]
        yield event()


def _verdict(dag_id: str, run_id: str, node: list[str]):
    from segment_elt import db
    from segment_elt.pipeline import dbt_build

    with db.connect() as conn:
        results, build_state = dbt_build.run_state(conn, dag_id, run_id)
    return dbt_build.node_verdict(results, build_state, node)


class DbtNodeOperator(BaseOperator):
    """One model, seed or snapshot with its tests: ends as they did in the run's build. Starts in the
    triggerer (no worker process); `execute` is the same verdict on a worker (e.g. under dag.test())."""

    ui_color = "#fcd9cf"
    start_from_trigger = True

    def __init__(self, *, node: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.node = node
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=_TRIGGER,
            trigger_kwargs={"node": node},
            next_method="execute_complete",
            timeout=dt.timedelta(minutes=10),
        )

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        verdict = _verdict(self.dag_id, context["dag_run"].run_id, self.node)
        for line in verdict.lines:
            self.log.info("%s", line)
        if verdict.state == "failed":
            raise AirflowFailException(verdict.lines[0] if verdict.lines else "failed in the build")
        if verdict.state == "skipped":
            raise AirflowSkipException(verdict.lines[-1])

    def execute_complete(self, context: Any, event: Any = None) -> None:
        """Not reached: the trigger ends the task itself."""


@dataclass(frozen=True)
class DbtTasks:
    build: DbtBuildOperator  # chain the DAG's next task after this
    models: TaskGroup  # the per-model tasks; they follow the build by themselves


def dbt_tasks(vars_template: str, group_id: str = "dbt", **build_args: Any) -> DbtTasks:
    """The build task and the per-model tasks of the project, for the DAG being defined.
    `vars_template` renders to the run's dbt vars as JSON; `build_args` go to DbtBuildOperator
    (`on_success`, `outlets`). Set the DAG's tasks upstream and downstream of `.build`."""
    from segment_elt.pipeline.dbt_build import project_nodes

    manifest = manifest_path()
    if not manifest.exists():
        raise FileNotFoundError(
            f"{manifest} is missing: run `python -c 'from segment_elt.pipeline.airflow_dbt import "
            "ensure_manifest; ensure_manifest()'` (make up and make demo do it)"
        )
    build = DbtBuildOperator(task_id=BUILD_TASK, dbt_vars=vars_template, pool=POOL, **build_args)
    with TaskGroup(group_id, tooltip="each model, seed and snapshot of the build, with its tests") as models:
        folders: dict[str, TaskGroup] = {}
        for node in project_nodes(manifest):
            if node.folder not in folders:
                folders[node.folder] = TaskGroup(node.folder)
            DbtNodeOperator(
                task_id=node.name,
                task_group=folders[node.folder],
                node=[node.unique_id, *node.tests],
                trigger_rule="none_skipped",
                retries=0,
                doc_md=f"`{node.unique_id}` and its {len(node.tests)} tests, as they fared in `{BUILD_TASK}`.",
            )
    build >> models
    return DbtTasks(build, models)
