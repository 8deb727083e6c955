"""Starting and stopping the embedded pieces for `make demo` and `make up`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import requests

from segment_elt import db
from segment_elt.control import schema
from segment_elt.local import embedded
from segment_elt.local.airflow_env import ensure_metadata_database, stack_env
from segment_elt.settings import settings

BIN = Path(sys.executable).parent


def exit_code_of(main: Callable[[], int]) -> int:
    """Run a local command's main; a server that cannot start is one line on stderr, not a traceback."""
    try:
        return main()
    except embedded.StartFailed as exc:
        print(exc, file=sys.stderr)
        return 1


@contextmanager
def embedded_database():
    """Start the embedded PostgreSQL unless DATABASE_URL points elsewhere; stop it after if we started it."""
    started = False
    if not os.environ.get("DATABASE_URL"):
        base = settings().local_dir / "pg"
        started = not embedded.is_running(base)
        embedded.start(base)
    try:
        with db.connect() as conn:
            schema.upgrade(conn)
        yield settings().require_database_url()
    finally:
        if started:
            embedded.stop(settings().local_dir / "pg")


@contextmanager
def process(args: list[str], env: dict, log_name: str):
    """A child process with its output in .local/logs/<log_name>.log, terminated on exit."""
    logs = settings().local_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{log_name}.log").open("ab") as log:
        proc = subprocess.Popen(
            args, cwd=settings().project_dir, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def receiver(bind: str):
    with process(
        [str(BIN / "gunicorn"), "-c", str(settings().project_dir / "receiver" / "gunicorn.conf.py")],
        {"RECEIVER_BIND": bind, "RECEIVER_WORKERS": os.environ.get("RECEIVER_WORKERS", "2")},
        "receiver",
    ) as proc:
        url = f"http://{bind}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=1)
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the receiver did not start; see {settings().local_dir / 'logs' / 'receiver.log'}"
                    ) from None
                time.sleep(0.1)
        yield url


def generate_dbt_docs(url: str) -> None:
    """The dbt docs the cosmos plugin serves in Airflow's UI, into dbt_project/target. Without
    compiling: compiling runs the identity rules checks, which read seeds a fresh database lacks."""
    from segment_elt.pipeline.transform import run_dbt

    run_dbt(["docs", "generate", "--no-compile", "--quiet"], url)


def airflow_ready(url: str) -> dict[str, str]:
    """Environment of the Airflow processes, with a migrated metadata DB and the dbt pool."""
    from segment_elt.pipeline.airflow_dbt import POOL, ensure_manifest

    ensure_metadata_database(url)
    env = stack_env(url)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    full = {**os.environ, **env}
    ensure_manifest()
    generate_dbt_docs(url)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=full, check=True, capture_output=True)
    subprocess.run(
        [str(BIN / "airflow"), "pools", "set", POOL, "1", "dbt models run one at a time"],
        env=full,
        check=True,
        capture_output=True,
    )
    return env
