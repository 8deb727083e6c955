# The project image: receiver, CLI, Airflow with the project's DAGs and dbt project.
FROM python:3.11.16-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DO_NOT_TRACK=1 SEGMENT_ELT_PROJECT_DIR=/app \
    AIRFLOW_HOME=/opt/airflow SEGMENT_ELT_LOCAL_DIR=/opt/segment-elt

RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 50000 app && mkdir -p /app /opt/airflow /opt/segment-elt \
    && chown app /app /opt/airflow /opt/segment-elt

WORKDIR /app
# The receiver and Airflow extras at the lock's pins (no test tools in the image), installed from
# pyproject.toml and the lock alone, so a change to the code reuses this layer; the project
# itself then installs over it without dependencies.
COPY --chown=app pyproject.toml requirements.txt ./
RUN touch README.md && pip install --no-cache-dir -c requirements.txt -e ".[receiver,airflow]"
COPY --chown=app . .
RUN pip install --no-cache-dir --no-deps -e .

# As the runtime user, so dbt_project/target and logs stay writable for the dbt tasks.
USER app
RUN DATABASE_URL=postgresql://build@localhost/build python -c \
    "from segment_elt.pipeline.airflow_dbt import ensure_manifest; ensure_manifest()"
EXPOSE 8080
CMD ["gunicorn", "-c", "receiver/gunicorn.conf.py"]
