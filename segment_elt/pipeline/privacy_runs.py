"""segment_privacy's tasks (dags/segment_privacy.py): the deletions as Airflow carries them out.

The same steps as `segment-elt privacy run` (segment_elt.pipeline.erasure), in two tasks: `erase`
without the dbt writer role (events and builds go on meanwhile), then `rebuild` under the run's
record, which holds the role as every writer DAG's does. Both take the privacy lock, so a CLI run
and a DAG run never work at once: the one that finds it taken leaves the work to the other.
"""

from __future__ import annotations

import logging
from collections import Counter

from segment_elt import db
from segment_elt.control import privacy
from segment_elt.ingest.archive import open_archive
from segment_elt.pipeline import erasure, runs
from segment_elt.settings import settings

log = logging.getLogger(__name__)
STATEMENT_TIMEOUT_S = 3600  # a pass over millions of staged rows


def erase_pending() -> bool:
    """Steps 1 and 2 of every unfinished deletion (erasure.erase); whether any deletion now waits
    for its rebuild. False, with a log line, when another privacy run holds the lock."""
    current = settings()
    with db.connect(timeout_s=STATEMENT_TIMEOUT_S, application_name="segment_privacy erase") as conn:
        seconds: dict[str, float] = {}
        try:
            with erasure.one_privacy_run(conn):
                erased = erasure.erase(conn, open_archive(current.archive_url, current.archive_timeout_s), seconds)
        except erasure.PrivacyRunBusy as exc:
            log.info("%s", exc)
            return False
        waiting = [subject.regulation_id for subject in privacy.unfinished(conn) if subject.state == "rebuilding"]
        log.info(
            "erased regulations %s; waiting for the rebuild: %s; seconds per step %s",
            erased,
            waiting,
            {step: round(took, 1) for step, took in seconds.items()},
        )
        return bool(waiting)


def rebuild_and_finish(dag_id: str, run_id: str) -> dict:
    """Step 3 (erasure.finish) while the run's open record holds the writer role; closes the record
    with the regulations it finished and what they removed."""
    with db.connect(timeout_s=STATEMENT_TIMEOUT_S, application_name="segment_privacy rebuild") as conn:
        try:
            with erasure.one_privacy_run(conn):
                done = erasure.finish(conn, lambda: erasure.rebuild_models(writer_role=False))
        except erasure.PrivacyRunBusy as exc:
            log.info("%s", exc)
            return runs.finish_run(conn, dag_id, run_id, "skipped", {"reason": str(exc)})
        removed: Counter = Counter()
        for subject in done:
            removed.update(privacy.counts_of(conn, subject.regulation_id))
        detail = {"regulations": sorted(subject.regulation_id for subject in done), "removed": dict(removed)}
        return runs.finish_run(conn, dag_id, run_id, "success", detail)
