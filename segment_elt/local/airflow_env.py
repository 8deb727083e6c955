"""The Airflow configuration of the embedded default: environment variables, metadata DB, pool.

python -m segment_elt.local.airflow_env   # prints `export` lines for a shell
"""

from __future__ import annotations

import json
import os
import sys

from segment_elt.settings import settings

DBT_DOCS_SLUG = "segment_elt"  # the docs answer at /cosmos/segment_elt/dbt_docs_index.html


def airflow_env(metadata_url: str | None = None) -> dict[str, str]:
    """Variables for Airflow processes: AIRFLOW_HOME under .local/, the project's dags and plugins."""
    current = settings()
    home, port = current.local_dir / "airflow", current.airflow_port
    env = {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(current.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(current.project_dir / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__COSMOS__ENABLE_CACHE": "True",
        "AIRFLOW__COSMOS__DBT_DOCS_PROJECTS": dbt_docs_projects(current.dbt_project_dir / "target"),
        "DO_NOT_TRACK": "1",
        "SCARF_ANALYTICS": "false",
    }
    if metadata_url:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_url
    return env


def dbt_docs_projects(target_dir) -> str:
    """astronomer-cosmos' dbt docs plugin setting: the project's docs (`dbt docs generate` writes them to target/)."""
    return json.dumps(
        {DBT_DOCS_SLUG: {"dir": str(target_dir), "index": "index.html", "name": "dbt docs (segment-elt)"}}
    )


def postgres_metadata_url(database_url: str) -> str:
    """SQLAlchemy URL of a database `airflow` on the same server as DATABASE_URL."""
    from urllib.parse import urlparse, urlunparse

    parsed = urlparse(database_url)
    return urlunparse(parsed._replace(scheme="postgresql+psycopg2", path="/airflow"))


def ensure_metadata_database(database_url: str) -> None:
    """Create the `airflow` database next to the project's, if missing."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = 'airflow'").fetchone() is None:
            conn.execute("create database airflow")


def stack_env(database_url: str) -> dict[str, str]:
    """What `make up` runs Airflow with: the metadata database `airflow` next to DATABASE_URL
    (unless AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names another) and DATABASE_URL itself."""
    env = airflow_env(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or postgres_metadata_url(database_url))
    env["DATABASE_URL"] = database_url
    return env


def main() -> int:
    for key, value in stack_env(settings().require_database_url()).items():
        print(f"export {key}={value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
