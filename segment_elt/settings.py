"""Every setting the project reads from the environment, in one object, read when asked.

`settings()` reads the environment each time it is called (nothing is read at import), so a
bad value fails the command that needs it, as one line naming the variable, and tests can
change the environment freely. docs/configuration.md is the table of these variables.

With nothing set, everything runs on the embedded defaults under `.local/` of the project
directory: the embedded PostgreSQL (whose URL its start writes to `.local/pg/url`), a
`file://` archive, a generated Fernet key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from segment_elt.errors import UserError

CHECKOUT = Path(__file__).resolve().parent.parent
# Values never echoed in an error message.
SECRET_VARIABLES = {
    "DATABASE_URL",
    "SEGMENT_ELT_FERNET_KEY",
    "AIRFLOW_PASSWORD",
    "SEGMENT_ELT_ALERT_WEBHOOK_URL",
    "SEGMENT_ELT_ALERT_SMTP_URL",
}


def _default_project_dir() -> Path:
    """The checkout the package runs from (an editable install), else the working directory."""
    return CHECKOUT if (CHECKOUT / "dbt_project").is_dir() else Path.cwd()


class SettingsError(UserError):
    """An environment variable has a value the project cannot use."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=False)

    # where things are
    project_dir: Path = Field(default_factory=_default_project_dir, validation_alias="SEGMENT_ELT_PROJECT_DIR")
    local_dir: Path = Field(
        default_factory=lambda given: given["project_dir"] / ".local", validation_alias="SEGMENT_ELT_LOCAL_DIR"
    )
    # the backends
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    archive_url: str = Field(
        default_factory=lambda given: (given["local_dir"].resolve() / "archive").as_uri(),
        validation_alias="ARCHIVE_URL",
    )
    fernet_key: str | None = Field(None, validation_alias="SEGMENT_ELT_FERNET_KEY")
    public_base_url: str = Field("http://127.0.0.1:8080", validation_alias="PUBLIC_BASE_URL")
    segment_api_url: str | None = Field(None, validation_alias="SEGMENT_API_URL")
    # the receiver: each backend call must fail fast enough that the answer beats Segment's 10 s timeout
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1, validation_alias="SEGMENT_ELT_MAX_BODY_BYTES")
    db_timeout_s: float = Field(3.0, gt=0, le=8, validation_alias="SEGMENT_ELT_DB_TIMEOUT_S")
    archive_timeout_s: float = Field(3.0, gt=0, le=8, validation_alias="SEGMENT_ELT_ARCHIVE_TIMEOUT_S")
    retry_after_s: int = Field(5, ge=1, validation_alias="SEGMENT_ELT_RETRY_AFTER_S")
    # the receiver's gunicorn (receiver/gunicorn.conf.py); workers unset: one per CPU
    receiver_bind: str = Field("127.0.0.1:8080", min_length=1, validation_alias="RECEIVER_BIND")
    receiver_workers: int | None = Field(None, ge=1, validation_alias="RECEIVER_WORKERS")
    receiver_threads: int = Field(64, ge=1, validation_alias="RECEIVER_THREADS")
    receiver_timeout_s: int = Field(30, ge=1, validation_alias="RECEIVER_TIMEOUT")
    # group commit (docs/receiver.md#group-commit): writers per process, and a group's limits
    receiver_group_writers: int = Field(3, ge=1, le=64, validation_alias="RECEIVER_GROUP_WRITERS")
    receiver_group_max_requests: int = Field(200, ge=1, validation_alias="RECEIVER_GROUP_MAX_REQUESTS")
    receiver_group_max_bytes: int = Field(8 * 1024 * 1024, ge=1, validation_alias="RECEIVER_GROUP_MAX_BYTES")
    receiver_queue_max_bytes: int = Field(256 * 1024 * 1024, ge=1, validation_alias="RECEIVER_QUEUE_MAX_BYTES")
    prometheus_multiproc_dir: Path | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    receiver_loglevel: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", validation_alias="RECEIVER_LOGLEVEL"
    )
    # the DAGs
    retention_days: int = Field(30, ge=1, validation_alias="SEGMENT_ELT_RETENTION_DAYS")
    dag_retries: int = Field(2, ge=0, validation_alias="SEGMENT_ELT_DAG_RETRIES")
    stale_run_hours: float = Field(6.0, gt=0, validation_alias="SEGMENT_ELT_STALE_RUN_HOURS")
    raw_stale_hours: int = Field(6, ge=1, validation_alias="SEGMENT_ELT_RAW_STALE_HOURS")
    writer_wait_s: float = Field(3600.0, ge=0, validation_alias="SEGMENT_ELT_WRITER_WAIT_S")
    alert_webhook_url: str | None = Field(None, validation_alias="SEGMENT_ELT_ALERT_WEBHOOK_URL")
    alert_smtp_url: str | None = Field(None, pattern=r"^smtps?://[^/]+$", validation_alias="SEGMENT_ELT_ALERT_SMTP_URL")
    alert_email_to: str | None = Field(None, validation_alias="SEGMENT_ELT_ALERT_EMAIL_TO")
    alert_email_from: str | None = Field(None, validation_alias="SEGMENT_ELT_ALERT_EMAIL_FROM")
    rollups_every_minutes: int = Field(10, ge=1, le=1440, validation_alias="SEGMENT_ELT_ROLLUPS_EVERY_MINUTES")
    rollups_late_minutes: int = Field(30, ge=1, validation_alias="SEGMENT_ELT_ROLLUPS_LATE_MINUTES")
    backfill_days_per_build: int = Field(31, ge=1, le=366, validation_alias="SEGMENT_ELT_BACKFILL_DAYS_PER_BUILD")
    # Airflow's API server, for `connections reconcile`
    airflow_port: int = Field(8081, ge=1, le=65535, validation_alias="AIRFLOW_PORT")
    airflow_api_url: str = Field(
        default_factory=lambda given: f"http://127.0.0.1:{given['airflow_port']}", validation_alias="AIRFLOW_API_URL"
    )
    airflow_username: str | None = Field(None, validation_alias="AIRFLOW_USERNAME")
    airflow_password: str | None = Field(None, validation_alias="AIRFLOW_PASSWORD")
    # the embedded PostgreSQL
    pg_port: int | None = Field(None, ge=1, le=65535, validation_alias="SEGMENT_ELT_PG_PORT")

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        self.local_dir = self.local_dir.resolve()
        self.airflow_api_url = self.airflow_api_url.rstrip("/")
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

    @property
    def dbt_project_dir(self) -> Path:
        return self.project_dir / "dbt_project"

    @property
    def dags_dir(self) -> Path:
        return self.project_dir / "dags"

    def require_database_url(self) -> str:
        """DATABASE_URL, else the URL the embedded PostgreSQL under .local/pg wrote when it started."""
        if self.database_url:
            return self.database_url
        written = self.local_dir / "pg" / "url"
        if written.exists():
            return written.read_text().strip()
        raise SettingsError(
            f"DATABASE_URL is not set and no embedded PostgreSQL has started under {written.parent}: "
            "set DATABASE_URL, or start the embedded one (make db-start)"
        )


def settings() -> Settings:
    """The settings as the environment says now; a bad value is a SettingsError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = str(error["loc"][0])  # errors are located by the environment variable's name
        shown = "" if variable in SECRET_VARIABLES else f"={error.get('input')!r}"
        raise SettingsError(
            f"{variable}{shown} is not usable: {error['msg'].lower()}"
            f" (default {_field(variable).get_default(call_default_factory=False)!r})"
        ) from None


def settings_while_parsing() -> Settings:
    """The settings for what Airflow evaluates when it parses the DAG files (task defaults, where
    the dbt project is): a value it cannot use takes its default here, so every DAG still imports,
    and the first task that calls settings() fails on it, as one line naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        # a default computed from a bad value is not an error of its own: it follows once that takes its default
        variables = {str(e["loc"][0]) for e in exc.errors() if e["type"] != "default_factory_not_called"}
        return Settings(**{variable: _field(variable).get_default(call_default_factory=True) for variable in variables})


def _field(variable: str) -> FieldInfo:
    return next(f for f in Settings.model_fields.values() if f.validation_alias == variable)
