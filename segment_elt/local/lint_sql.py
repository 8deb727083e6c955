"""`make lint`'s SQL part: sqlfluff over dbt_project/ with the dbt templater, which compiles the
models against a database: DATABASE_URL, else the embedded PostgreSQL (started, then stopped)."""

from __future__ import annotations

import os
import subprocess
import sys

from segment_elt.local.stack import embedded_database
from segment_elt.pipeline.transform import dbt_env
from segment_elt.settings import settings


def main() -> int:
    with embedded_database() as url:
        env = {**os.environ, **dbt_env(url)}
        return subprocess.run(
            [sys.executable, "-m", "sqlfluff", "lint", "dbt_project"], cwd=settings().project_dir, env=env
        ).returncode


if __name__ == "__main__":
    sys.exit(main())
