"""Is data still arriving? `dbt source freshness` on what the receiver lands, in every rollups run.

raw.segment_events is fresh while its newest row landed less than an hour ago (dbt warns after
that) and stale once it is older than SEGMENT_ELT_RAW_STALE_HOURS (default 6): then the check
raises SourceStale, the rollups run fails and the failure alert names the source and its age.
A table that has never received a row only warns (nothing was sent yet). The app sources
(imports of accounts and contacts) only warn, after 7 days.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from segment_elt.settings import settings

log = logging.getLogger(__name__)


class SourceStale(RuntimeError):
    """A source's newest row is older than its error threshold."""


@dataclass(frozen=True)
class SourceAge:
    source: str  # e.g. raw.segment_events
    status: str  # pass, warn, error, runtime error
    age_hours: float | None  # None: the table holds no row
    line: str

    def as_dict(self) -> dict:
        return {"source": self.source, "status": self.status, "age_hours": self.age_hours}


def check(url: str | None = None) -> list[SourceAge]:
    """Run `dbt source freshness`; log each source's age, raise SourceStale naming every stale one."""
    from segment_elt.pipeline.transform import run_dbt

    stale_hours = settings().raw_stale_hours
    results = run_dbt(
        ["source", "freshness", "--vars", json.dumps({"raw_stale_hours": stale_hours})], url=url, check=False
    )
    ages = [_age(result, stale_hours) for result in results.results if result.node.resource_type == "source"]
    for age in ages:
        (log.warning if age.status != "pass" else log.info)("%s", age.line)
    stale = [age.line for age in ages if age.status not in ("pass", "warn")]
    if stale:
        raise SourceStale("; ".join(stale))
    return ages


def _age(result, stale_hours: float) -> SourceAge:
    node = result.node
    source = f"{node.source_name}.{node.name}"
    status = str(result.status)
    if status == "runtime error":
        return SourceAge(source, status, None, f"{source}: its freshness could not be read: {result.message}")
    if result.max_loaded_at.year == 1:  # dbt's stand-in for max() of an empty table: warn, never fail
        return SourceAge(source, "warn", None, f"{source}: no row yet")
    hours = round(result.age / 3600, 2)
    line = f"{source}: newest row landed {hours} h ago"
    if status == "error":
        line += (
            f", more than SEGMENT_ELT_RAW_STALE_HOURS={stale_hours:g}: is Segment still sending to "
            "the receiver, and is the receiver up?"
        )
    elif status == "warn":
        line += " (dbt warns after its warn_after)"
    return SourceAge(source, status, hours, line)
