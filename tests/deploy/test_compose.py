"""docker-compose.yaml and the Dockerfile, checked statically (no Docker engine here)."""

from __future__ import annotations

import importlib
import importlib.resources
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
PROJECT_ENV = {"DATABASE_URL", "ARCHIVE_URL", "SEGMENT_ELT_FERNET_KEY", "PUBLIC_BASE_URL", "SEGMENT_API_URL"}
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PROJECT_IMAGE = f"segment-elt:{PROJECT_VERSION}"
PROJECT = {name for name, s in SERVICES.items() if s.get("image") == PROJECT_IMAGE}
AIRFLOW = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}


# Repositories that no longer serve pulls: MinIO deleted both from Docker Hub in September 2026
# ("pull access denied"), and its community edition is archived.
GONE_REPOSITORIES = {"minio/minio", "minio/mc"}
# The Compose Specification's JSON schema, as check-jsonschema vendors it from compose-spec/compose-spec
# (Apache-2.0; the licence ships beside it in the package).
COMPOSE_SCHEMA = json.loads(
    (importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
)


def _schema_errors(document: dict) -> list[str]:
    validator = jsonschema.validators.validator_for(COMPOSE_SCHEMA)(COMPOSE_SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_file_follows_the_compose_specification():
    assert _schema_errors(COMPOSE) == []


def test_the_schema_check_rejects_what_compose_rejects():
    misspelt = {"services": {"app": {"image": "app:1.0", "healthchek": {"test": ["CMD", "true"]}}}}
    bad_condition = {"services": {"app": {"image": "app:1.0", "depends_on": {"db": {"condition": "started"}}}}}
    assert _schema_errors(misspelt) and _schema_errors(bad_condition)


def _repository_and_tag(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    name = name.removeprefix("docker.io/").removeprefix("library/")
    return name, tag or None


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned_to_a_repository_that_still_serves_it(name):
    repository, tag = _repository_and_tag(SERVICES[name]["image"])
    # A major.minor[.patch] tag: "latest" or a bare major ("postgres:17") moves under the same file.
    assert tag and re.match(r"v?\d+\.\d+", tag), f"{name}: pin {repository} to a version tag, not {tag}"
    assert repository not in GONE_REPOSITORIES, f"{name}: {repository} no longer serves pulls"


def test_the_project_image_is_tagged_with_the_project_version():
    built = {name for name, s in SERVICES.items() if "build" in s}
    assert built and all(SERVICES[name]["image"] == PROJECT_IMAGE for name in built)
    assert not any(s["image"].startswith("segment-elt:") and s["image"] != PROJECT_IMAGE for s in SERVICES.values())


def test_the_dockerfile_base_image_is_pinned_to_a_patch_release():
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", base), base


REQUIRED = re.compile(r"\$\{(?P<var>[A-Z_]+):\?(?P<message>[^}]+)\}")


@pytest.mark.parametrize(
    ("setting", "variable"),
    [
        ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET"),
        ("SEGMENT_ELT_FERNET_KEY", "SEGMENT_ELT_FERNET_KEY"),
        ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD"),
        ("AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_ADMIN_PASSWORD"),
    ],
)
def test_secrets_come_from_required_variables(setting, variable):
    """`${VAR:?message}` makes compose stop with the message when VAR is unset or empty: no shared default."""
    holders = [name for name, s in SERVICES.items() if setting in (s.get("environment") or {})]
    assert holders
    for name in holders:
        match = REQUIRED.fullmatch(SERVICES[name]["environment"][setting])
        assert match and match["var"] == variable and match["message"].strip(), (name, setting)
    assert "change-me" not in (ROOT / "docker-compose.yaml").read_text()


def test_no_credential_has_a_default():
    """Passwords, keys and secrets are required (`${VAR:?message}`): compose stops with one line that
    names the variable to set, and no installation runs on a password printed in this file."""
    text = (ROOT / "docker-compose.yaml").read_text()
    credentials = re.compile(r"PASSWORD|SECRET|KEY")
    defaults = [var for var in re.findall(r"\$\{([A-Z_]+):-", text) if credentials.search(var)]
    assert defaults == []
    for var, message in REQUIRED.findall(text):
        assert f"set {var} " in message, (var, message)
    urls = [
        v for s in SERVICES.values() for v in (s.get("environment") or {}).values() if "://" in str(v) and "@" in str(v)
    ]
    assert urls and all(re.search(r"://[^:/]+:\$\{POSTGRES_PASSWORD:\?", url) for url in urls), urls
    api_server = SERVICES["airflow-apiserver"]
    passwords = api_server["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert f"> {passwords} && exec airflow api-server" in " ".join(api_server["command"])


def test_a_code_change_does_not_reinstall_the_dependencies():
    """The image installs the dependencies from pyproject.toml and the lock before it copies the code."""
    steps = re.findall(r"^(COPY|RUN) (.*)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    copy_all = steps.index(("COPY", "--chown=app . ."))
    installs = [i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "-c requirements.txt" in args]
    assert installs and all(i < copy_all for i in installs)
    copied_before = [args.split()[1:-1] for kind, args in steps[:copy_all] if kind == "COPY"]
    assert copied_before == [["pyproject.toml", "requirements.txt"]]
    assert any(kind == "RUN" and "--no-deps -e ." in args for kind, args in steps[copy_all:])


def test_every_variable_has_a_default_or_is_required():
    """A bare `${VAR}` silently becomes empty when VAR is unset; say the default or require it."""
    text = (ROOT / "docker-compose.yaml").read_text().replace("$$", "")
    bare = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", text)
    assert bare == [], bare
    for var, operator in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])", text):
        assert operator in {":-", ":?"}, f"${{{var}{operator}...}}: use :- or :? so an empty value counts as unset"


def test_every_part_of_the_system_is_a_service():
    assert {"postgres", "s3", "archive-bucket", "redis", "migrate", "receiver"} | AIRFLOW <= set(SERVICES)
    assert AIRFLOW | {"migrate", "receiver", "archive-bucket"} <= PROJECT


@pytest.mark.parametrize("name", sorted(PROJECT))
def test_project_services_get_the_project_environment(name):
    env = SERVICES[name]["environment"]
    assert set(env) >= PROJECT_ENV, PROJECT_ENV - set(env)
    assert env["ARCHIVE_URL"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://s3:8333"
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
    for name in ("postgres", "s3", "redis", "receiver", "airflow-apiserver"):
        assert SERVICES[name].get("healthcheck", {}).get("test"), name
    assert "/readyz" in " ".join(SERVICES["receiver"]["healthcheck"]["test"])
    conditions = {"service_healthy", "service_completed_successfully"}
    for name, service in SERVICES.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, (name, dep)
            assert spec["condition"] in conditions, (name, dep)
    for first in ("migrate", "archive-bucket"):
        assert SERVICES["receiver"]["depends_on"][first]["condition"] == "service_completed_successfully"
    assert SERVICES["archive-bucket"]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_ports_and_volumes():
    assert "8080:8080" in SERVICES["receiver"]["ports"]
    assert "8081:8080" in SERVICES["airflow-apiserver"]["ports"]
    assert {"postgres-data", "s3-data"} <= set(COMPOSE["volumes"])


def test_the_s3_server_gets_the_keys_the_project_signs_with():
    s3 = SERVICES["s3"]
    config_path = next(arg.split("=", 1)[1] for arg in s3["command"] if arg.startswith("-s3.config="))
    mounted = {c["target"]: c["source"] for c in s3["configs"]}
    identities = COMPOSE["configs"][mounted[config_path]]["content"]
    env = SERVICES["receiver"]["environment"]
    assert env["AWS_ACCESS_KEY_ID"] in identities and env["AWS_SECRET_ACCESS_KEY"] in identities
    with_defaults = json.loads(re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", identities))
    assert {"Read", "Write", "List"} <= set(with_defaults["identities"][0]["actions"])
    assert f"-s3.port={env['AWS_ENDPOINT_URL'].rsplit(':', 1)[1]}" in s3["command"]


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
        module, worker = re.search(r'worker_class = "([^"]+)"', conf).group(1).rsplit(".", 1)
        assert isinstance(getattr(importlib.import_module(module), worker), type)
    if command[0] == "segment-elt":
        from segment_elt.cli import build_parser

        build_parser().parse_args(command[1:])


TEST_TOOLS = {
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "moto",
    "sqlfluff",
    "sqlfluff-templater-dbt",
    "check-jsonschema",
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str], extras_of_project: set[str]) -> set[str]:
    """Every distribution `requirements` pull in, walked through the installed packages' metadata."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [(Requirement(r), set()) for r in requirements]
    while todo:
        requirement, via_extras = todo.pop()
        env = default_environment()
        if requirement.marker and not any(requirement.marker.evaluate({**env, "extra": e}) for e in via_extras or {""}):
            continue
        name = _normalized(requirement.name)
        if name == "segment-elt":
            project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
            todo += [(Requirement(r), set()) for r in project["dependencies"]]
            for extra in requirement.extras - extras_of_project:
                extras_of_project.add(extra)
                todo += [(Requirement(r), set()) for r in project["optional-dependencies"][extra]]
            continue
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # not for this platform
        todo += [(Requirement(r), set(requirement.extras)) for r in requires]
    return {name for name, _ in seen}


def test_the_image_installs_the_project_at_the_locks_pins_without_test_tools():
    text = (ROOT / "Dockerfile").read_text()
    install = re.search(r'pip install --no-cache-dir -c requirements.txt -e "\.\[([a-z,]+)\]"', text)
    assert install, "the image installs the project's extras constrained by the lock"
    extras = set(install.group(1).split(","))
    assert extras == {"receiver", "airflow"}
    installed = _closure([f"segment-elt[{','.join(sorted(extras))}]"], set())
    assert {
        "flask",
        "gunicorn",
        "uvicorn-worker",
        "uvloop",
        "httptools",
        "a2wsgi",
        "apache-airflow",
        "astronomer-cosmos",
        "dbt-postgres",
    } <= installed
    assert installed & TEST_TOOLS == set()
    assert _closure(["segment-elt[dev]"], set()) >= TEST_TOOLS  # the check sees test tools when they are there
    assert "ensure_manifest" in text  # the DAGs load the dbt graph from the manifest baked in
    assert (ROOT / "deploy" / "create-airflow-db.sql").is_file()


def test_the_lock_pins_every_dependency_of_every_extra():
    pins = {
        _normalized(line.split("==")[0].split("[")[0])
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    wanted = _closure(["segment-elt[dev]"], set())
    assert wanted - pins == set()
