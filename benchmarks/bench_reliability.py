"""The long reliability runs (pytest's `slow` marker): the 10-minute soak, the long fault run under
load, and the identity property test on many more seeds. Reports pass/fail and wall time."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.figures import Figure

SUITES = {
    "soak, 10 minutes at 100 req/s, flat worker memory": "tests/reliability/test_soak.py",
    "faults under load, 3,600 events, worker kill + PostgreSQL restart": "tests/reliability/test_faults_under_load.py",
    "marts equal the reference on 37 more random worlds": "tests/dbt/test_marts_match_reference.py",
}


def run() -> list[Figure]:
    figures = []
    for name, path in SUITES.items():
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "slow", "-p", "no:logging", path])
        figures.append(Figure(name, time.monotonic() - began, "s", "passes", done.returncode == 0))
    return figures
