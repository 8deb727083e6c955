"""One settings object, read when asked: a bad value is one line naming the variable, every variable
is documented, and the defaults point at the embedded runtime."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segment_elt.settings import Settings, SettingsError, settings

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "segment-elt")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SEGMENT_ELT_RETENTION_DAYS", "30d", "SEGMENT_ELT_RETENTION_DAYS='30d' is not usable"),
        ("SEGMENT_ELT_RETENTION_DAYS", "0", "greater than or equal to 1"),
        ("SEGMENT_ELT_DB_TIMEOUT_S", "fast", "SEGMENT_ELT_DB_TIMEOUT_S='fast'"),
        ("AIRFLOW_PORT", "99999", "AIRFLOW_PORT='99999'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(database_url, variable, value, says):
    done = subprocess.run(
        [CLI, "connections", "list"], capture_output=True, text=True, env={**os.environ, variable: value}
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and says in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_are_read_when_asked_not_at_import(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGMENT_ELT_LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("ARCHIVE_URL", raising=False)
    assert settings().archive_url == (tmp_path / "archive").as_uri()
    monkeypatch.setenv("ARCHIVE_URL", "s3://bucket/raw")
    assert settings().archive_url == "s3://bucket/raw"


def test_without_database_url_the_embedded_servers_url_is_used_or_the_fix_named(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SEGMENT_ELT_LOCAL_DIR", str(tmp_path))
    with pytest.raises(SettingsError, match=r"DATABASE_URL is not set .* \(make db-start\)"):
        settings().require_database_url()
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "url").write_text("postgresql://postgres@127.0.0.1:5999/postgres\n")
    assert settings().require_database_url() == "postgresql://postgres@127.0.0.1:5999/postgres"


def test_every_variable_is_in_the_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z_]+)`", (ROOT / "docs" / "configuration.md").read_text(), re.MULTILINE))
    variables = {field.validation_alias for field in Settings.model_fields.values()}
    assert variables - documented == set()


def test_nothing_reads_the_environment_outside_the_settings():
    readers = []
    for folder in ("segment_elt", "dags", "plugins", "receiver"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "settings.py" or "local" in path.relative_to(ROOT).parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if (
                    re.search(r"""os\.environ(\.get\(["']|\[["'][^"']+["']\](?!\s*=))|os\.getenv\(""", line)
                    and "PG" not in line
                ):
                    readers.append(f"{path.relative_to(ROOT)}:{number}")
    assert readers == []


def test_a_bad_receiver_setting_stops_gunicorn_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "receiver" / "gunicorn.conf.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "RECEIVER_THREADS": "many"},
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "receiver: RECEIVER_THREADS='many' is not usable: input should be a valid integer, unable to parse string as an"
        " integer (default 64)"
    ]


def test_while_airflow_parses_the_dags_a_bad_value_takes_its_default(monkeypatch):
    from segment_elt.settings import settings_while_parsing

    monkeypatch.delenv("AIRFLOW_API_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_PORT", "eighty")  # a default computed from it follows it
    monkeypatch.setenv("SEGMENT_ELT_DAG_RETRIES", "twice")
    parsed = settings_while_parsing()
    assert (parsed.airflow_port, parsed.airflow_api_url, parsed.dag_retries) == (8081, "http://127.0.0.1:8081", 2)
    with pytest.raises(SettingsError, match=r"^(AIRFLOW_PORT='eighty'|SEGMENT_ELT_DAG_RETRIES='twice') is not usable"):
        settings()
