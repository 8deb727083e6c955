"""One `dbt build` per DAG run, each node's result recorded as it finishes (control.dbt_node_results).

The record is what the per-model tasks show (segment_elt.pipeline.airflow_dbt), what a retry reads
to rebuild only the nodes that did not succeed, and what the run's last line names when it fails.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import psycopg

from segment_elt import db

log = logging.getLogger(__name__)

SUCCEEDED = frozenset({"success", "pass", "warn"})
FAILED = frozenset({"error", "fail", "runtime error"})
BUILT_TYPES = frozenset({"model", "seed", "snapshot"})


@dataclass(frozen=True)
class Node:
    """A node of the project a per-model task stands for: a model, seed or snapshot and its tests."""

    unique_id: str
    name: str
    resource_type: str
    folder: str  # the first folder under models/ (staging, intermediate, marts, ...), or "seeds"
    tests: tuple[str, ...]  # unique ids of the tests attached to it


def project_nodes(manifest_path: Path) -> list[Node]:
    """The models, seeds and snapshots of the manifest, each with its attached tests, in manifest order."""
    manifest = json.loads(manifest_path.read_text())
    nodes = manifest["nodes"]
    tests: dict[str, list[str]] = {}
    for unique_id, node in nodes.items():
        if node["resource_type"] != "test":
            continue
        parents = [p for p in node["depends_on"]["nodes"] if p.split(".")[0] in BUILT_TYPES]
        owner = node.get("attached_node") or (parents[0] if parents else None)
        if owner:
            tests.setdefault(owner, []).append(unique_id)
    found = []
    for unique_id, node in nodes.items():
        if node["resource_type"] not in BUILT_TYPES:
            continue
        path = Path(node["original_file_path"]).parts
        folder = path[1] if node["resource_type"] == "model" and len(path) > 2 else f"{node['resource_type']}s"
        found.append(
            Node(unique_id, node["name"], node["resource_type"], folder, tuple(sorted(tests.get(unique_id, []))))
        )
    return found


def open_build(conn: psycopg.Connection, dag_id: str, run_id: str, try_number: int, selected: list[str] | None) -> None:
    conn.execute(
        "insert into control.dbt_builds (dag_id, run_id, try_number, selected) values (%s, %s, %s, %s)"
        " on conflict (dag_id, run_id, try_number) do update set started_at = clock_timestamp(), state = 'running',"
        " finished_at = null, selected = excluded.selected, summary = null",
        (dag_id, run_id, try_number, selected),
    )
    conn.execute(
        "delete from control.dbt_node_results where (dag_id, run_id, try_number) = (%s, %s, %s)",
        (dag_id, run_id, try_number),
    )


def close_build(conn: psycopg.Connection, dag_id: str, run_id: str, try_number: int, summary: str | None) -> None:
    conn.execute(
        "update control.dbt_builds set finished_at = clock_timestamp(), state = %s, summary = %s"
        " where (dag_id, run_id, try_number) = (%s, %s, %s)",
        ("failed" if summary else "success", summary, dag_id, run_id, try_number),
    )


def succeeded_before(conn: psycopg.Connection, dag_id: str, run_id: str, try_number: int) -> set[str]:
    """The nodes an earlier attempt of this run built or checked successfully."""
    rows = conn.execute(
        "select distinct unique_id from control.dbt_node_results"
        " where dag_id = %s and run_id = %s and try_number < %s and status = any(%s)",
        (dag_id, run_id, try_number, list(SUCCEEDED)),
    ).fetchall()
    return {row[0] for row in rows}


def retry_selection(manifest_path: Path, done: set[str]) -> list[str] | None:
    """What a retry rebuilds: every model, seed, snapshot and test an earlier attempt did not finish
    successfully (as `dbt retry` would), by name; None to build everything (nothing was done)."""
    if not done:
        return None
    nodes = json.loads(manifest_path.read_text())["nodes"]
    wanted = [
        node["name"]
        for unique_id, node in nodes.items()
        if node["resource_type"] in BUILT_TYPES | {"test"} and unique_id not in done
    ]
    return sorted(set(wanted))


class NodeRecorder:
    """A dbt event callback that records each node's start and result on its own connection.

    dbt calls it from its worker threads; the lines a node logs (a check's sentences naming the bad
    rows) are kept and prefixed to the node's message."""

    def __init__(self, conn: psycopg.Connection, dag_id: str, run_id: str, try_number: int):
        self.conn, self.key = conn, (dag_id, run_id, try_number)
        self.lock = threading.Lock()
        self.logged: dict[str, list[str]] = {}
        self.failures: list[tuple[str, str]] = []  # (unique_id, message)

    def __call__(self, event) -> None:
        name = event.info.name
        if name not in ("NodeStart", "NodeFinished", "JinjaLogInfo"):
            return
        info = event.data.node_info
        if not info.unique_id or info.unique_id.split(".")[0] not in BUILT_TYPES | {"test"}:
            return
        try:
            if name == "JinjaLogInfo":
                with self.lock:
                    self.logged.setdefault(info.unique_id, []).append(event.data.msg)
            elif name == "NodeStart":
                self._write(info.unique_id, "running", None, None, None)
            else:
                self._finished(info.unique_id, event.data.run_result)
        except Exception:  # a lost record must not fail the build; the run's end state still says it
            log.exception("could not record dbt node %s", info.unique_id)

    def _finished(self, unique_id: str, result) -> None:
        status = str(result.status).lower()
        message = result.message or ""
        with self.lock:
            lines = self.logged.pop(unique_id, [])
        if status in FAILED:
            message = " ".join([*lines, message]).strip()
            with self.lock:
                self.failures.append((unique_id, message))
        rows = result.adapter_response.fields.get("rows_affected") if result.adapter_response else None
        rows_affected = int(rows.number_value) if rows is not None and rows.HasField("number_value") else None
        self._write(unique_id, status, message or None, result.execution_time, rows_affected)

    def _write(self, unique_id: str, status: str, message, execution_s, rows_affected) -> None:
        with self.lock:
            self.conn.execute(
                "insert into control.dbt_node_results (dag_id, run_id, try_number, unique_id, status, message,"
                " started_at, finished_at, execution_s, rows_affected)"
                " values (%s, %s, %s, %s, %s, %s, clock_timestamp(),"
                " case when %s <> 'running' then clock_timestamp() end, %s, %s)"
                " on conflict (dag_id, run_id, try_number, unique_id) do update set status = excluded.status,"
                " message = excluded.message, finished_at = excluded.finished_at,"
                " execution_s = excluded.execution_s, rows_affected = excluded.rows_affected",
                (*self.key, unique_id, status, message, status, execution_s, rows_affected),
            )


def failure_summary(failures: list[tuple[str, str]], skipped: int = 0) -> str:
    """One line naming what failed with dbt's message, e.g.
    `dbt build failed: test identity_rule_sources_are_known_identity_rules_: identity_rules.csv row 4 ...`."""
    named = "; ".join(f"{uid.split('.')[0]} {uid.split('.')[2]}: {message}" for uid, message in failures)
    tail = f" ({skipped} nodes downstream not built)" if skipped else ""
    return f"dbt build failed: {named or 'see the dbt output above'}{tail}"


def build(
    dag_id: str,
    run_id: str,
    try_number: int,
    dbt_vars: dict,
    manifest_path: Path,
    url: str | None = None,
    project_dir: Path | None = None,
) -> dict:
    """Run `dbt build` for one attempt of a DAG run, recording every node; on a retry only what an
    earlier attempt did not finish. Returns the build's figures; raises DbtFailed with one line."""
    from segment_elt.pipeline.transform import DbtFailed, run_dbt

    with db.connect(url, autocommit=True) as conn:
        selected = retry_selection(manifest_path, succeeded_before(conn, dag_id, run_id, try_number))
        open_build(conn, dag_id, run_id, try_number, selected)
        if selected == []:
            close_build(conn, dag_id, run_id, try_number, None)
            return {"nodes": 0, "selected": []}
        if selected:
            log.info("retry: rebuilding the %d nodes an earlier attempt did not finish", len(selected))
        recorder = NodeRecorder(conn, dag_id, run_id, try_number)
        args = ["build", "--vars", json.dumps(dbt_vars)]
        if selected:
            args += ["--select", *selected]
        try:
            results = run_dbt(args, url, project_dir, check=False, writer_role=False, callbacks=[recorder])
        except DbtFailed as exc:  # dbt could not run at all (a project that does not compile, ...)
            close_build(conn, dag_id, run_id, try_number, str(exc))
            raise
        statuses = [str(r.status).lower() for r in results]
        skipped = statuses.count("skipped")
        summary = failure_summary(recorder.failures, skipped) if recorder.failures else None
        close_build(conn, dag_id, run_id, try_number, summary)
    if summary:
        raise DbtFailed(summary)
    return {"nodes": len(statuses), "selected": selected, "seconds": round(float(results.elapsed_time or 0), 2)}


def node_results(conn: psycopg.Connection, dag_id: str, run_id: str) -> dict[str, tuple[str, str | None, int]]:
    """unique_id -> (status, message, try_number) of each node's latest attempt in a run."""
    rows = conn.execute(
        "select distinct on (unique_id) unique_id, status, message, try_number from control.dbt_node_results"
        " where dag_id = %s and run_id = %s order by unique_id, try_number desc",
        (dag_id, run_id),
    ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def prune(conn: psycopg.Connection, older_than: dt.timedelta) -> int:
    """Forget the builds (and their node results) that started more than `older_than` ago."""
    return conn.execute("delete from control.dbt_builds where started_at < now() - %s", (older_than,)).rowcount


@dataclass(frozen=True)
class Verdict:
    state: str  # success, failed, skipped
    lines: list[str]


def node_verdict(results: dict[str, tuple[str, str | None, int]], build_state: str | None, node: list[str]) -> Verdict:
    """How the task of `node` (a model, seed or snapshot, then its tests, by unique id) ends once the
    run's build is over: failed if it or one of its tests failed, skipped if dbt did not build it
    because something upstream failed, else success. `results` as node_results() returns them."""
    failures, lines = [], []
    for unique_id in node:
        status, message, try_number = results.get(unique_id, (None, None, 0))
        label = f"{unique_id.split('.')[0]} {unique_id.split('.')[2]}"
        if status is None:
            continue
        if status in FAILED or status == "running":
            what = "the build stopped while running it" if status == "running" else status
            failures.append(f"{label}: {what}{': ' + message if message else ''} (attempt {try_number})")
        else:
            lines.append(f"{label}: {status}{' (' + message + ')' if message and status != 'skipped' else ''}")
    if failures:
        return Verdict("failed", failures + lines)
    own = results.get(node[0], (None, None, 0))[0]
    if own is None:
        if build_state == "success":
            return Verdict("success", [*lines, f"{node[0]}: not part of this build (nothing selected it)"])
        return Verdict("skipped", [*lines, f"{node[0]}: not built: the build failed before it (see dbt_build)"])
    if own == "skipped":
        return Verdict("skipped", [*lines, f"{node[0]}: not built: something upstream failed (see dbt_build)"])
    return Verdict("success", lines)


def failure_of(conn: psycopg.Connection, dag_id: str, run_id: str) -> str | None:
    """The one line of a run's last failed build attempt, or None."""
    row = conn.execute(
        "select summary from control.dbt_builds where dag_id = %s and run_id = %s and state = 'failed'"
        " order by try_number desc limit 1",
        (dag_id, run_id),
    ).fetchone()
    return row[0] if row else None


def run_state(conn: psycopg.Connection, dag_id: str, run_id: str) -> tuple[dict, str | None]:
    """The run's node results and its latest build attempt's state."""
    row = conn.execute(
        "select state from control.dbt_builds where dag_id = %s and run_id = %s order by try_number desc limit 1",
        (dag_id, run_id),
    ).fetchone()
    return node_results(conn, dag_id, run_id), row[0] if row else None
