"""After a deletion, every model equals what the reference computes from everyone else's events:
staging, stitching, traits, the rollups, indicators, health, recent events and audiences no
longer count the person, and nobody else's figures change for any other reason."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from segment_elt.control import privacy
from segment_elt.ingest.archive import open_archive
from segment_elt.pipeline import erasure
from tests.dbt.harness import Loaded, copy_project, differences, fetch_marts
from tests.dbt.reference import Reference, dedupe
from tests.dbt.world import ALLOW_TIED_POSITIONS, AS_OF, make_world


def persons_events(loaded: Loaded, org: str, user_id: str) -> set[tuple[str, str]]:
    """(connection, messageId) of the person's events as docs/privacy.md defines them: their
    userId, or no userId and an anonymousId whose first link names them."""
    reference = Reference(loaded.landed, [], [], [], [], [], AS_OF)
    return {
        (e.connection_id, e.message_id)
        for e in reference.events  # the copy of each message that landed (retries are duplicates)
        if e.org_id == org and reference.stitched_user(e) == user_id
    }


@pytest.mark.parametrize("seed", range(3))
def test_marts_after_deletion_match_the_reference_without_the_person(seed, db, tmp_path, archive_url):
    world = make_world(seed)
    project = copy_project(tmp_path)
    loaded = Loaded(db, world, project)
    rng = random.Random(seed)
    loaded.land(world.events, AS_OF - dt.timedelta(days=1, hours=rng.randint(0, 12)))
    loaded.build(*ALLOW_TIED_POSITIONS)

    # someone who logged in from a visitor id (stitched anonymous events), else anyone with events
    linked = [e for e in loaded.landed if e.linked_anonymous_id]
    person = (linked or [e for e in loaded.landed if e.user_id])[0]
    gone = persons_events(loaded, person.org_id, person.user_id)
    assert gone

    privacy.request(db, person.org_id, privacy.DELETE_ONLY, [person.user_id])
    erasure.run(
        db,
        open_archive(archive_url),
        rebuild=lambda: erasure.rebuild_models(project, {"as_of": AS_OF.isoformat()}, ALLOW_TIED_POSITIONS),
    )

    loaded.landed = [e for e in dedupe(loaded.landed) if (e.connection_id, e.message_id) not in gone]
    diffs = differences(loaded.reference(), fetch_marts(db))
    assert not diffs, f"seed {seed}, after deleting {person.user_id}:\n" + "\n".join(diffs[:25])
    for table in ("staging.stg_segment__events", "intermediate.int_events__resolution_queue"):
        left = db.execute(f"select connection_id, message_id from {table}").fetchall()
        assert not gone & set(left), table
    traits = db.execute(
        "select 1 from intermediate.int_traits__latest where org_id = %s and subject_type = 'user' and subject_id = %s",
        (person.org_id, person.user_id),
    ).fetchall()
    assert traits == []
    assert privacy.status(db)[0]["state"] == "done"
