"""The dbt project builds with all its tests and unit tests, documents itself, and lints clean."""

from __future__ import annotations

import os
import subprocess
import sys

from segment_elt.pipeline.transform import dbt_env, run_dbt
from segment_elt.settings import settings


def test_build_with_tests_and_docs(database_url):
    results = run_dbt(["build"])
    statuses = {str(r.status) for r in results}
    assert statuses <= {"success", "pass"}, statuses
    assert any(r.node.resource_type == "unit_test" for r in results)
    run_dbt(["docs", "generate"])
    assert (settings().dbt_project_dir / "target" / "catalog.json").exists()


def test_sqlfluff_is_clean_on_first_and_incremental_runs(database_url):
    env = {**os.environ, **dbt_env(database_url)}
    for state in ("empty database", "after a build"):  # is_incremental() renders differently
        lint = subprocess.run([sys.executable, "-m", "sqlfluff", "lint", str(settings().dbt_project_dir / "models")],
                              cwd=settings().dbt_project_dir.parent, env=env, capture_output=True, text=True)
        assert lint.returncode == 0, f"{state}:\n{lint.stdout[-3000:]}"
        run_dbt(["build"])
