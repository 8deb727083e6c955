"""One real `airflow api-server` for all the UI tests with the Segment page plugin loaded, over a real
PostgreSQL holding events landed through the real receiver and marts built by dbt.

Users (SimpleAuthManager): admin (everything), user (reads, triggers runs, edits DAGs),
viewer (reads only).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from segment_elt.control import connections, entities
from segment_elt.dag_ids import ROLLUPS
from segment_elt.local import samples
from segment_elt.local.airflow_env import airflow_env
from segment_elt.local.stack import generate_dbt_docs
from segment_elt.pipeline import runs
from tests.helpers import ROOT, Receiver, free_port, start_receiver, wait_http
from tests.ui.browser import MISSING
from tests.ui.browser import PATHS as browser_paths

ORG = "acme"
ALLOWLIST = ["Report Created", "Dashboard Viewed", "$page", "$identify", "$group"]
ACCOUNT = dict(account_id="acct-acme", name="Acme", external_id="acme-ext-1", ps_id=None, vitally_id=None, traits={})
USERS = {"admin": "admin", "user": "user", "viewer": "viewer"}  # name -> role
DAYS = 12  # days of sample events, so the chart has bars
ROLLUPS_RUN = "manual__ui-tests"


@dataclass
class Landed:
    database_url: str
    archive_url: str
    receiver: Receiver
    connection_id: str
    secret: str

    def post(self, event: dict) -> requests.Response:
        body = json.dumps(event).encode()
        return requests.post(
            self.receiver.webhook(self.connection_id), data=body, headers=samples.headers(self.secret, body), timeout=10
        )


@dataclass
class Airflow:
    url: str
    passwords: dict[str, str]
    proc: subprocess.Popen
    log: Path

    def token(self, username: str) -> str:
        answer = requests.post(
            f"{self.url}/auth/token", json={"username": username, "password": self.passwords[username]}, timeout=10
        )
        answer.raise_for_status()
        return answer.json()["access_token"]

    def session(self, username: str) -> requests.Session:
        """A client signed in as `username` the way the UI is: the JWT in Airflow's cookie."""
        session = requests.Session()
        session.cookies.set("_token", self.token(username))
        return session


@pytest.fixture(scope="package")
def landed(pg_server, tmp_path_factory) -> Landed:
    """A connection of org acme with DAYS days of sample events, a rejected request, and built marts."""
    from segment_elt.pipeline.transform import run_dbt

    database_url = pg_server.create_database()
    base = tmp_path_factory.mktemp("ui-landed")
    archive_url = (base / "archive").as_uri()
    env = {"DATABASE_URL": database_url, "ARCHIVE_URL": archive_url}
    receiver = start_receiver(env, base, workers=1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        created = connections.create(conn, ORG, "Acme web")
        connections.allowlist(conn, created.connection_id, add=ALLOWLIST)
        entities.upsert(conn, ORG, entities.ACCOUNTS, [ACCOUNT])
    landed = Landed(database_url, archive_url, receiver, created.connection_id, created.secret)
    now = dt.datetime.now(dt.UTC)
    for day in range(DAYS):
        events = samples.workday(seed=day, now=now - dt.timedelta(days=day))
        body, first = samples.batch_body(events)
        answer = requests.post(
            receiver.webhook(created.connection_id),
            data=body,
            headers=samples.headers(created.secret, first),
            timeout=15,
        )
        assert answer.status_code == 200, answer.text
    wrong = requests.post(
        receiver.webhook(created.connection_id),
        data=b"{}",
        headers=samples.headers("not-the-secret", b"{}"),
        timeout=10,
    )
    assert wrong.status_code == 401
    run_dbt(["build", "--quiet"], url=database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:  # the record a segment_rollups run leaves
        conn.execute(
            "insert into control.pipeline_runs (dag_id, run_id, run_type, staged_rows)"
            " select %s, %s, 'manual', count(*) from raw.segment_events",
            (ROLLUPS, ROLLUPS_RUN),
        )
        runs.finish_run(conn, ROLLUPS, ROLLUPS_RUN, "success", {"marts": runs.mart_counts(conn)})
    generate_dbt_docs(database_url)
    yield landed
    receiver.stop()


@contextmanager
def running_airflow(landed: Landed, home: Path, port: int, base_url: str) -> Iterator[Airflow]:
    """`airflow api-server` on `port` with the project's plugins folder, its DAGs serialized, three users;
    `base_url` is its [api] base_url, where clients reach it (itself, or a proxy path in front of it)."""
    passwords = {name: f"{name}-pw" for name in USERS}
    (home / "passwords.json").write_text(json.dumps(passwords))
    env = {
        **os.environ,
        **airflow_env(f"sqlite:///{home}/airflow.db"),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW_API_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{r}" for n, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "DATABASE_URL": landed.database_url,
        "ARCHIVE_URL": landed.archive_url,
    }
    airflow_cli = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow_cli, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([*airflow_cli, "dags", "reserialize"], env=env, check=True, capture_output=True)
    log = home / "api-server.log"
    proc = subprocess.Popen(
        [*airflow_cli, "api-server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}{urlsplit(base_url).path}/api/v2/monitor/health", timeout_s=120, proc=proc)
        yield Airflow(base_url, passwords, proc, log)
    finally:
        stop(proc)


@pytest.fixture(scope="package")
def airflow(landed, tmp_path_factory) -> Iterator[Airflow]:
    """The API server at the root of its own port, as `make up` runs it."""
    port = free_port()
    with running_airflow(landed, tmp_path_factory.mktemp("ui-airflow"), port, f"http://127.0.0.1:{port}") as running:
        yield running


@pytest.fixture(scope="package")
def airflow_behind_proxy(landed, tmp_path_factory) -> Iterator[Airflow]:
    """The API server behind a real nginx that forwards only PROXY_PATH/ to it (anything else is nginx's 404),
    with [api] base_url http://127.0.0.1:<nginx port>/airflow: a deployment under a path prefix."""
    if shutil.which("nginx") is None:
        if os.environ.get("SEGMENT_ELT_CI") == "1":
            pytest.fail(f"the path prefix tests are mandatory in CI (SEGMENT_ELT_CI=1): {NO_NGINX}")
        pytest.skip(NO_NGINX)
    home = tmp_path_factory.mktemp("ui-airflow-prefixed")
    port, proxy_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{proxy_port}{PROXY_PATH}"
    with (
        running_nginx(home / "nginx", proxy_port, PROXY_PATH, port),
        running_airflow(landed, home, port, base_url) as running,
    ):
        yield running


PROXY_PATH = "/airflow"
NO_NGINX = "no nginx on PATH (apt-get install nginx)"
NGINX_CONF = """daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location {path}/ {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $http_host;
            proxy_http_version 1.1;
            proxy_buffering off;
        }}
        location / {{ return 404 "not under {path}/\n"; }}
    }}
}}
"""


@contextmanager
def running_nginx(folder: Path, port: int, path: str, upstream: int) -> Iterator[str]:
    """Debian's nginx on `port`, passing requests under `path`/ unchanged to 127.0.0.1:`upstream`."""
    (folder / "tmp").mkdir(parents=True)
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=folder, port=port, path=path, upstream=upstream))
    proc = subprocess.Popen(
        ["nginx", "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "stderr.log").open("wb"),
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout_s=15, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium per test module: a fresh cookie jar (cookies ignore ports, so two Airflows on 127.0.0.1
    would share them)."""
    paths = browser_paths
    if paths is None:
        pytest.fail(f"browser tests are mandatory in CI (SEGMENT_ELT_CI=1): {MISSING}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1440,900",
        "--disable-gpu",
        "--no-first-run",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(paths[1]))  # the system driver: nothing downloads
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="package")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SEGMENT_ELT_SCREENSHOTS_DIR") or tmp_path_factory.getbasetemp() / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
