"""Real Airflow for the DAG tests: a migrated SQLite metadata DB per session, DAGs parsed per test.

DAG files read DATABASE_URL when parsed (the dbt connection), so each test parses them after its
own database exists.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from segment_elt.local.airflow_env import airflow_env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory, pg_server):
    home = tmp_path_factory.mktemp("airflow")
    env = airflow_env(f"sqlite:///{home}/airflow.db")
    env.update(AIRFLOW_HOME=str(home), SEGMENT_ELT_DAG_RETRIES="0", AIRFLOW__CORE__EXECUTOR="LocalExecutor")
    os.environ.update(env)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ)
    from segment_elt.pipeline.airflow_dbt import ensure_manifest

    os.environ["DATABASE_URL"] = pg_server.url()
    ensure_manifest()
    return home


@pytest.fixture
def acme(db):
    """A connection of org acme that lets two events through, with account a1 mapped to group acme-ext."""
    from segment_elt.control import connections, entities

    created = connections.create(db, "acme")
    connections.allowlist(db, created.connection_id, add=["Report Created", "$page"])
    entities.upsert(
        db,
        "acme",
        entities.ACCOUNTS,
        [
            {
                "account_id": "a1",
                "name": "Acme",
                "external_id": "acme-ext",
                "ps_id": None,
                "vitally_id": None,
                "traits": {},
            }
        ],
    )
    return created


@pytest.fixture
def dags(airflow_home, database_url, archive_url):
    """The project's DAGs, parsed against this test's database and archive."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors, bag.import_errors
    return bag.dags
