"""Is data still arriving? `dbt source freshness` on what the receiver lands, from every rollups run.

raw.segment_events is fresh while its newest row landed less than its warn_after ago (one hour,
dbt_project/models/staging/_sources.yml) and stale once it is older than
SEGMENT_ELT_RAW_STALE_HOURS (default 6): then the check raises SourceStale, the rollups run fails
and the failure alert names the source and its age. A table that has never received a row only
warns (nothing was sent yet). The app sources (imports of accounts and contacts) only warn, after
7 days. `check_for_run` spares a run dbt's whole check while raw is fresh (docs/dags.md).
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


RAW = "source.segment_elt.raw.segment_events"
_HOURS = {"minute": 1 / 60, "hour": 1, "day": 24}


def check_for_run(full: bool, url: str | None = None) -> list[SourceAge]:
    """The check a rollups run makes: dbt's whole check when `full`, or when raw.segment_events'
    newest row is older than the warn_after dbt's config gives it; else that row's age, read with
    one indexed query (dbt would say `pass` for raw, and the app sources only ever warn)."""
    from segment_elt import db
    from segment_elt.pipeline.transform import manifest_path

    if not full:
        warn_after = json.loads(manifest_path().read_text())["sources"][RAW]["freshness"]["warn_after"]
        with db.connect(url) as conn:
            (age,) = db.one(conn, "select extract(epoch from now() - max(loaded_at)) from raw.segment_events")
        if age is not None and float(age) / 3600 < warn_after["count"] * _HOURS[warn_after["period"]]:
            hours = round(float(age) / 3600, 2)
            fresh = SourceAge(
                "raw.segment_events", "pass", hours, f"raw.segment_events: newest row landed {hours} h ago"
            )
            log.info("%s", fresh.line)
            return [fresh]
    return check(url)


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
