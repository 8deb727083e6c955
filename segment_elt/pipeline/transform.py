"""Running the dbt project (dbt_project/) in-process, with its connection taken from DATABASE_URL."""

from __future__ import annotations

import getpass
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import psycopg

from segment_elt.errors import UserError
from segment_elt.settings import settings, settings_while_parsing


def manifest_path() -> Path:
    """The manifest `dbt parse` writes (segment_elt.pipeline.airflow_dbt.ensure_manifest), which the DAGs
    load when parsed (so a bad setting here takes its default: segment_elt.settings.settings_while_parsing)."""
    return settings_while_parsing().dbt_project_dir / "target" / "manifest.json"


class DbtFailed(RuntimeError):
    """dbt finished with errors or failing tests."""


# libpq settings dbt-postgres takes, and the profile variable each becomes (profiles.yml).
DBT_SETTINGS = {
    "sslmode": "SEGMENT_ELT_DBT_SSLMODE",
    "sslcert": "SEGMENT_ELT_DBT_SSLCERT",
    "sslkey": "SEGMENT_ELT_DBT_SSLKEY",
    "sslrootcert": "SEGMENT_ELT_DBT_SSLROOTCERT",
    "connect_timeout": "SEGMENT_ELT_DBT_CONNECT_TIMEOUT",
    "keepalives_idle": "SEGMENT_ELT_DBT_KEEPALIVES_IDLE",
    "application_name": "SEGMENT_ELT_DBT_APPLICATION_NAME",
}
_CONNECTION = {"host", "port", "user", "password", "dbname"}
_SEARCH_PATH_OPTION = re.compile(r"^\s*-c\s*search_path\s*=\s*(\S+)\s*$")


def dbt_env(url: str | None = None) -> dict[str, str]:
    """The environment variables dbt_project/profiles.yml reads, derived from a libpq URL or DSN.

    libpq itself parses it (every documented form: `postgresql://user@host:port/db?...`, a Unix
    socket as `?host=/dir` or a percent-encoded host, `key=value` strings), and its defaults
    apply where dbt-postgres has no notion of "unset": an empty host is libpq's default socket.
    A setting dbt cannot take raises UserError rather than connect dbt differently from the rest."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = {k: str(v) for k, v in conninfo_to_dict(url or settings().require_database_url()).items()}
    except psycopg.ProgrammingError as exc:
        raise UserError(f"DATABASE_URL is not a PostgreSQL URL libpq accepts: {exc}") from None
    options = given.pop("options", None)
    if options is not None:
        match = _SEARCH_PATH_OPTION.match(options)
        if match is None:
            raise UserError(f"DATABASE_URL options={options!r}: dbt can take only `-c search_path=...` there")
        given["search_path"] = match.group(1)
    unsupported = sorted(set(given) - _CONNECTION - set(DBT_SETTINGS) - {"search_path"})
    if unsupported:
        raise UserError(
            f"DATABASE_URL sets {', '.join(unsupported)}, which dbt-postgres cannot take; it takes "
            f"{', '.join([*DBT_SETTINGS, 'options=-c search_path=...'])}"
        )
    if "," in given.get("host", "") + given.get("port", ""):
        raise UserError("DATABASE_URL names several hosts or ports; dbt-postgres connects to one")
    user = given.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    return {
        "SEGMENT_ELT_DBT_HOST": given.get("host") or os.environ.get("PGHOST", ""),
        "SEGMENT_ELT_DBT_PORT": given.get("port") or os.environ.get("PGPORT") or "5432",
        "SEGMENT_ELT_DBT_USER": user,
        "SEGMENT_ELT_DBT_PASSWORD": given.get("password") or os.environ.get("PGPASSWORD", ""),
        "SEGMENT_ELT_DBT_DBNAME": given.get("dbname") or os.environ.get("PGDATABASE") or user,
        "SEGMENT_ELT_DBT_SEARCH_PATH": given.get("search_path", ""),
        **{variable: given[key] for key, variable in DBT_SETTINGS.items() if key in given},
        "PGTZ": "UTC",
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


@contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# dbt commands that write models or seeds: they take the writer role (segment_elt.pipeline.runs).
WRITING_COMMANDS = frozenset({"build", "run", "seed", "snapshot"})


# Commands that write dbt_project/target itself (the manifest every DAG parse loads, and the docs),
# or write nothing there.
_OWN_TARGET_PATH = frozenset({"parse", "docs", "debug"})


def run_dbt(
    args: list[str],
    url: str | None = None,
    project_dir: Path | None = None,
    check: bool = True,
    *,
    writer_role: bool = True,
    callbacks: list | None = None,
):
    """Run `dbt <args>` against DATABASE_URL (or `url`) and return its results; raises DbtFailed
    unless it succeeds (or, with check=False, only when dbt could not run at all).

    A command that writes waits until no Airflow run or other process writes the models, unless
    `writer_role` is False (an Airflow run's own build: its run record holds the role). Only
    `parse` and `docs` write dbt_project/target; every other command keeps its artefacts (and its
    partial-parse state) in target/<command>/, so the manifest the DAGs load is never rewritten."""
    from dbt.cli.main import dbtRunner

    from segment_elt.pipeline import dbt_patches

    dbt_patches.apply()

    project_dir = project_dir or settings().dbt_project_dir
    full = [*args, "--project-dir", str(project_dir), "--profiles-dir", str(project_dir)]
    if args[0] not in _OWN_TARGET_PATH:
        full += ["--target-path", str(project_dir / "target" / args[0])]
    writes = writer_role and args[0] in WRITING_COMMANDS
    with _environ(dbt_env(url)), _writer_role(writes, url):
        result = dbtRunner(callbacks=callbacks or []).invoke(full)
    if not result.success and (check or result.result is None):
        detail = result.exception or _failures(result.result)
        raise DbtFailed(f"dbt {' '.join(args)} failed: {detail}")
    return result.result


@contextmanager
def _writer_role(writes: bool, url: str | None):
    if not writes:
        yield
        return
    from segment_elt import db
    from segment_elt.pipeline import runs

    name = f"segment-elt in-process dbt build (pid {os.getpid()})"
    with (
        db.connect(url, application_name=name) as lock_conn,
        runs.sole_writer(lock_conn, say=lambda line: print(line, file=sys.stderr, flush=True)),
    ):
        yield


def _failures(results) -> str:
    try:
        bad = [f"{r.node.name}: {r.message}" for r in results if str(r.status) in {"error", "fail"}]
    except TypeError:
        return "see the dbt log"
    return "; ".join(bad) or "see the dbt log"
