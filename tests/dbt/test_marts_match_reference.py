"""Property test: for random worlds landed in random arrival batches, every mart equals the reference.

After each batch the incremental build runs; its marts must equal the plain-Python reading of
the contract over what has landed so far, and at the end a --full-refresh must give the same.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from tests.dbt.harness import Loaded, copy_project, differences, fetch_marts
from tests.dbt.world import ALLOW_TIED_POSITIONS, AS_OF, make_world


def run_world(seed: int, db, tmp_path, batches: int = 3) -> None:
    world = make_world(seed)
    project = copy_project(tmp_path)
    rng = random.Random(seed)
    if rng.random() < 0.5:  # the engagement component weighed (it ships with weight 0)
        weights = project / "seeds" / "health_weights.csv"
        weights.write_text(weights.read_text().replace("engagement,0,", f"engagement,{rng.randint(5, 30)},"))
    loaded = Loaded(db, world, project)
    cuts = sorted(rng.sample(range(1, len(world.events)), batches - 1))
    chunks = [world.events[a:b] for a, b in zip([0, *cuts], [*cuts, len(world.events)], strict=True)]
    for n, chunk in enumerate(chunks):
        loaded.land(chunk, AS_OF - dt.timedelta(days=batches - n, hours=rng.randint(0, 12)))
        loaded.build(*ALLOW_TIED_POSITIONS)
        diffs = differences(loaded.reference(), fetch_marts(db))
        assert not diffs, f"seed {seed}, after batch {n + 1}:\n" + "\n".join(diffs[:25])
    incremental = fetch_marts(db)
    loaded.build("--full-refresh", *ALLOW_TIED_POSITIONS)
    assert fetch_marts(db) == incremental, f"seed {seed}: --full-refresh differs from the incremental result"


@pytest.mark.parametrize("seed", range(3))
def test_marts_match_reference(seed, db, tmp_path):
    run_world(seed, db, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 40))
def test_marts_match_reference_many_seeds(seed, db, tmp_path):
    run_world(seed, db, tmp_path, batches=4)
