"""`make bench`: run every benchmarks/bench_*.py and print one table with the machine it ran on.

Each module has `run() -> list[Figure]`; `python -m benchmarks receiver` runs only the
modules whose name contains "receiver".
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from benchmarks.figures import Figure, machine


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    figures: list[Figure] = []
    for name in wanted:
        started = time.monotonic()
        print(f"== {name} ...", flush=True)
        figures.extend(importlib.import_module(f"benchmarks.{name}").run())
        print(f"== {name} done in {time.monotonic() - started:.0f} s", flush=True)
    print()
    print(f"machine: {machine()}")
    print()
    print("| benchmark | figure | target | met |")
    print("|---|---|---|---|")
    for f in figures:
        print(f.row())
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
