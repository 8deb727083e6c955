"""Every documented form of DATABASE_URL works end to end, dbt included (a Unix socket, query settings)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlparse

import pytest

from segment_elt.control import connections, entities
from segment_elt.errors import UserError
from segment_elt.local import embedded, samples
from segment_elt.pipeline.transform import DbtFailed, dbt_env, run_dbt
from tests.dags.test_dag_runs import NOW, land, run, total_events


def socket_url(pg_server, database_url: str) -> str:
    """The test's database through the embedded server's Unix socket, as Linux hosts write it."""
    parsed = urlparse(database_url)
    return (
        f"postgresql:///{parsed.path.lstrip('/')}?host={embedded.socket_dir(pg_server.base)}"
        f"&port={parsed.port}&user=postgres"
    )


def test_a_unix_socket_url_runs_the_cosmos_dag(pg_server, database_url, airflow_home, archive_url, db, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", socket_url(pg_server, database_url))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors, bag.import_errors
    created = connections.create(db, "acme")
    connections.allowlist(db, created.connection_id, add=["Report Created"])
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
    at = NOW - dt.timedelta(hours=1)
    land(
        db,
        created,
        [
            samples.event(
                "track", user_id="u1", group_id="acme-ext", name="Report Created", at=at + dt.timedelta(seconds=i)
            )
            for i in range(3)
        ],
        NOW,
    )
    run(bag.dags["segment_rollups"])
    assert total_events(db) == 3


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "postgresql:///segment?host=/var/run/postgresql&user=etl",
            {
                "SEGMENT_ELT_DBT_HOST": "/var/run/postgresql",
                "SEGMENT_ELT_DBT_DBNAME": "segment",
                "SEGMENT_ELT_DBT_USER": "etl",
            },
        ),
        (
            "postgresql://etl@%2Fvar%2Frun%2Fpostgresql:6432/segment",
            {"SEGMENT_ELT_DBT_HOST": "/var/run/postgresql", "SEGMENT_ELT_DBT_PORT": "6432"},
        ),
        (
            "postgresql://etl:p%40ss@db.internal/segment?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=3",
            {
                "SEGMENT_ELT_DBT_PASSWORD": "p@ss",
                "SEGMENT_ELT_DBT_SSLMODE": "verify-full",
                "SEGMENT_ELT_DBT_SSLROOTCERT": "/etc/ca.pem",
                "SEGMENT_ELT_DBT_CONNECT_TIMEOUT": "3",
            },
        ),
        (
            "host=db.internal dbname=segment user=etl options='-c search_path=etl'",
            {"SEGMENT_ELT_DBT_HOST": "db.internal", "SEGMENT_ELT_DBT_SEARCH_PATH": "etl"},
        ),
    ],
)
def test_every_documented_url_form_reaches_the_dbt_profile(url, expected):
    env = dbt_env(url)
    assert {k: env[k] for k in expected} == expected


@pytest.mark.parametrize(
    "url, named",
    [
        ("postgresql://db/segment?target_session_attrs=read-write", "target_session_attrs"),
        ("postgresql://db/segment?options=-c%20work_mem%3D1MB", "work_mem"),
        ("postgresql://a,b/segment", "several hosts"),
    ],
)
def test_a_setting_dbt_cannot_take_is_one_clear_error(url, named):
    with pytest.raises(UserError, match=named):
        dbt_env(url)


def test_sslmode_reaches_dbt(pg_server, database_url, capfd):
    """The embedded server has no SSL: dbt must refuse to connect when the URL requires it."""
    run_dbt(["debug", "--connection"], url=f"{database_url}?sslmode=disable")
    with pytest.raises(DbtFailed):
        run_dbt(["debug", "--connection"], url=f"{database_url}?sslmode=require")
    assert "does not support SSL" in capfd.readouterr().out
