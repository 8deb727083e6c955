"""GET /metrics: the receiver's counters in Prometheus' text format, summed over every gunicorn
worker (prometheus_client's multiprocess mode: each worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR, which receiver/gunicorn.conf.py sets up for each start), and the
pipeline's freshness (segment_elt.control.lag), read from the database at each scrape."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from segment_elt.settings import settings

bp = Blueprint("metrics", __name__)

REQUESTS = Counter(
    "segment_elt_receiver_requests", "Webhook requests answered, by status and reason", ["status", "reason"]
)
EVENTS = Counter(
    "segment_elt_receiver_events", "Events in accepted requests: landed new, or duplicates of staged ones", ["outcome"]
)
RATE_LIMITED_EVENTS = Counter(
    "segment_elt_receiver_rate_limited_events", "Events in requests the org's token bucket refused (429)"
)
BACKEND_ERRORS = Counter(
    "segment_elt_receiver_backend_errors", "Archive or database failures answered 503", ["backend"]
)
SUPPRESSED_EVENTS = Counter(
    "segment_elt_receiver_suppressed_events",
    "Events of suppressed people (docs/privacy.md): answered 200, not landed",
)
GROUP_REQUESTS = Histogram(
    "segment_elt_receiver_group_requests",
    "Requests per group commit (one archive object and one staging statement each)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
LATENCY = Histogram(
    "segment_elt_receiver_request_seconds",
    "Webhook request time, from routing to the answer",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


_REQUESTS_BY: dict[tuple[int, str], Counter] = {}
_LANDED, _DUPLICATE = EVENTS.labels("landed"), EVENTS.labels("duplicate")


def count_request(status: int, reason: str) -> None:
    """REQUESTS, with each (status, reason) child looked up once per process."""
    child = _REQUESTS_BY.get((status, reason))
    if child is None:
        child = _REQUESTS_BY[(status, reason)] = REQUESTS.labels(str(status), reason)
    child.inc()


def count_events(landed: int, duplicates: int) -> None:
    """EVENTS of an accepted request (its suppressed events are counted as SUPPRESSED_EVENTS)."""
    if landed:
        _LANDED.inc(landed)
    if duplicates:
        _DUPLICATE.inc(duplicates)


class FreshnessCollector:
    """segment_elt_pipeline_lag_seconds and what it is computed from; nothing when the database does not answer."""

    def collect(self):
        from segment_elt import db
        from segment_elt.control.lag import marts_lag

        try:
            with db.connect(timeout_s=2) as conn:
                lag = marts_lag(conn)
        except Exception:  # the scrape still answers with the counters; the gauge's absence is the signal
            return
        yield GaugeMetricFamily(
            "segment_elt_pipeline_lag_seconds",
            "How long the oldest staged event not yet in the marts has waited (0: the marts hold everything staged)",
            value=lag.seconds,
        )
        for name, at, doc in (
            ("segment_elt_newest_landed_timestamp_seconds", lag.newest_landed, "When the newest event was staged"),
            ("segment_elt_marts_through_timestamp_seconds", lag.marts_through, "Staged up to when the marts hold"),
        ):
            if at is not None:
                yield GaugeMetricFamily(name, doc, value=at.timestamp())


@bp.get("/metrics")
def metrics():
    registry = REGISTRY  # one process (the app outside gunicorn)
    if settings().prometheus_multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    freshness = CollectorRegistry()
    freshness.register(FreshnessCollector())
    return Response(generate_latest(registry) + generate_latest(freshness), mimetype=CONTENT_TYPE_LATEST)
