"""The dbt project builds with all its tests and unit tests, documents itself, and lints clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from segment_elt.local.stack import generate_dbt_docs
from segment_elt.pipeline.transform import dbt_env, run_dbt
from segment_elt.settings import settings


def test_build_with_tests_and_docs(database_url):
    results = run_dbt(["build"])
    statuses = {str(r.status) for r in results if r.node.resource_type != "exposure"}  # exposures: no-op
    assert statuses <= {"success", "pass"}, statuses
    assert any(r.node.resource_type == "unit_test" for r in results)
    run_dbt(["docs", "generate"])
    assert (settings().dbt_project_dir / "target" / "catalog.json").exists()


def test_the_docs_airflow_serves_generate_on_a_fresh_database(database_url):
    # make up / make demo generate them before the first build, when no seed is loaded yet
    generate_dbt_docs(database_url)
    manifest = json.loads((settings().dbt_project_dir / "target" / "manifest.json").read_text())
    assert "model.segment_elt.account_health" in manifest["nodes"]
    assert (settings().dbt_project_dir / "target" / "index.html").exists()


def test_sqlfluff_is_clean_on_first_and_incremental_runs(database_url):
    env = {**os.environ, **dbt_env(database_url)}
    for state in ("empty database", "after a build"):  # is_incremental() renders differently
        lint = subprocess.run(
            [sys.executable, "-m", "sqlfluff", "lint", str(settings().dbt_project_dir / "models")],
            cwd=settings().dbt_project_dir.parent,
            env=env,
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, f"{state}:\n{lint.stdout[-3000:]}"
        run_dbt(["build"])


def _schemas(*target: str) -> dict[str, str]:
    listed = run_dbt(
        [
            "ls",
            "--resource-type",
            "model",
            "--resource-type",
            "seed",
            "--output",
            "json",
            "--output-keys",
            "name",
            "schema",
            "--quiet",
            *target,
        ]
    )
    return {node["name"]: node["schema"] for node in map(json.loads, listed)}


def test_a_dev_target_writes_prefixed_schemas_and_seeds_have_their_own(database_url):
    production, dev = _schemas(), _schemas("--target", "dev")
    assert (production["product_events"], production["stg_segment__events"], production["identity_rules"]) == (
        "analytics",
        "staging",
        "seeds",
    )
    assert (dev["product_events"], dev["stg_segment__events"], dev["identity_rules"]) == (
        "dev_analytics",
        "dev_staging",
        "dev_seeds",
    )


def test_the_outbound_models_are_an_exposure_and_sources_are_read_only_in_staging(database_url):
    exposures = run_dbt(
        ["ls", "--resource-type", "exposure", "--output", "json", "--output-keys", "name", "depends_on", "--quiet"]
    )
    (exposure,) = map(json.loads, exposures)
    assert {
        "model.segment_elt.outbound_identify",
        "model.segment_elt.outbound_group",
        "model.segment_elt.outbound_moments",
    } <= set(exposure["depends_on"]["nodes"])
    models = settings().dbt_project_dir / "models"
    readers = [
        p.relative_to(models).as_posix()
        for p in models.rglob("*.sql")
        if "source(" in p.read_text() and p.parent.name != "staging"
    ]
    assert readers == []
