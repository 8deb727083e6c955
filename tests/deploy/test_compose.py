"""docker-compose.yaml and the Dockerfile, checked statically (no Docker engine here)."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
CONTRACT_ENV = {"DATABASE_URL", "ARCHIVE_URL", "SEGMENT_ELT_FERNET_KEY", "PUBLIC_BASE_URL", "SEGMENT_API_URL"}
PROJECT = {name for name, s in SERVICES.items() if s.get("image") == "segment-elt:latest"}
AIRFLOW = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
           "airflow-worker"}


def test_every_part_of_the_system_is_a_service():
    assert {"postgres", "minio", "minio-init", "redis", "migrate", "receiver"} | AIRFLOW <= set(SERVICES)
    assert AIRFLOW | {"migrate", "receiver"} <= PROJECT


@pytest.mark.parametrize("name", sorted(PROJECT))
def test_project_services_get_the_contract_environment(name):
    env = SERVICES[name]["environment"]
    assert CONTRACT_ENV <= set(env), CONTRACT_ENV - set(env)
    assert env["ARCHIVE_URL"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["DATABASE_URL"].startswith("postgresql://")


def test_airflow_runs_celery_on_redis_with_the_project_dags():
    for name in AIRFLOW:
        env = SERVICES[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        assert (ROOT / env["AIRFLOW__CORE__DAGS_FOLDER"].removeprefix("/app/")).is_dir()
    assert SERVICES["airflow-worker"]["command"][:3] == ["airflow", "celery", "worker"]
    importlib.import_module("airflow.providers.celery")


def test_healthchecks_and_start_order():
    for name in ("postgres", "minio", "redis", "receiver", "airflow-apiserver"):
        assert SERVICES[name].get("healthcheck", {}).get("test"), name
    assert "/readyz" in " ".join(SERVICES["receiver"]["healthcheck"]["test"])
    conditions = {"service_healthy", "service_completed_successfully"}
    for name, service in SERVICES.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, (name, dep)
            assert spec["condition"] in conditions, (name, dep)
    assert SERVICES["receiver"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_ports_and_volumes():
    assert "8080:8080" in SERVICES["receiver"]["ports"]
    assert "8081:8080" in SERVICES["airflow-apiserver"]["ports"]
    assert {"postgres-data", "minio-data"} <= set(COMPOSE["volumes"])


def _files_and_modules(command: list[str]):
    words = shlex.split(" ".join(command)) if len(command) > 2 else command
    for word in words:
        if word.endswith((".py", ".conf.py")) and "/" in word:
            yield "file", word
    for match in re.finditer(r"from ([a-z_.]+) import", " ".join(command)):
        yield "module", match.group(1)


@pytest.mark.parametrize("name", sorted(PROJECT))
def test_every_command_refers_to_something_that_exists(name):
    command = SERVICES[name]["command"]
    for kind, ref in _files_and_modules(command):
        if kind == "file":
            assert (ROOT / ref).is_file(), ref
        else:
            importlib.import_module(ref)
    if command[0] == "gunicorn":
        conf = (ROOT / "receiver" / "gunicorn.conf.py").read_text()
        app = re.search(r'wsgi_app = "([^"]+)"', conf).group(1)
        module, factory = app.rstrip("()").split(":")
        assert callable(getattr(importlib.import_module(module), factory))
    if command[0] == "segment-elt":
        from segment_elt.cli import build_parser

        build_parser().parse_args(command[1:])


def test_dockerfile_installs_the_lock_then_the_project():
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.txt" in text and "pip install --no-cache-dir -r requirements.txt" in text
    assert text.index("requirements.txt") < text.index("COPY --chown=app . .")
    assert "pip install --no-cache-dir --no-deps -e ." in text
    assert "ensure_manifest" in text  # the DAGs load the dbt graph from the manifest baked in
    assert (ROOT / "deploy" / "create-airflow-db.sql").is_file()
