"""What suppression costs the receiver's hot path: one receiver (file archive), two orgs side by
side, one suppressing nobody (nothing is hashed) and one suppressing PEOPLE people by userId,
three stitched anonymousIds each and an email (every event is hashed: its userId or
anonymousId, and its emails). The load is other people's events, so every event is checked and
landed: the price of checking. Rounds alternate between the two orgs so that other work on the
machine weighs on both alike; each figure is the median of ROUNDS, and the ratio is on / off.
Also the matching alone, in-process (privacy.Suppressed.matches), per event.
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.bench_receiver import _bodies, database, saturation_cpu
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, privacy
from segment_elt.local import samples
from tests.helpers import start_receiver

PEOPLE = int(os.environ.get("BENCH_SUPPRESSION_PEOPLE", "1000"))
ROUNDS = int(os.environ.get("BENCH_SUPPRESSION_ROUNDS", "3"))


def _suppress(conn, org_id: str) -> None:
    """PEOPLE people of `org_id` suppressed with 3 stitched anonymousIds and an email each."""
    key = privacy.hash_key(conn)
    [regulation] = privacy.request(conn, org_id, privacy.SUPPRESS, ["s-0"], email="s-0@example.com")
    rows = []
    for n in range(PEOPLE):
        rows.append((org_id, privacy.subject_hash(key, org_id, f"s-{n}"), privacy.USER_ID, regulation))
        rows += [
            (
                org_id,
                privacy.id_hash(key, org_id, privacy.ANONYMOUS_ID, f"s-{n}-device-{d}"),
                privacy.ANONYMOUS_ID,
                regulation,
            )
            for d in range(3)
        ]
        rows.append(
            (org_id, privacy.id_hash(key, org_id, privacy.EMAIL, f"s-{n}@example.com"), privacy.EMAIL, regulation)
        )
    with conn.cursor() as cur:
        cur.executemany(
            "insert into control.suppressions (org_id, subject_hash, kind, regulation_id) values (%s, %s, %s, %s)"
            " on conflict do nothing",
            rows,
        )


def _matching_us(conn, org_id: str) -> float:
    """Microseconds per event of privacy.Suppressed.matches, over the benchmark's events."""
    found = privacy.suppressed_ids(conn, org_id)
    assert found is not None
    events = [samples.event("track", user_id=f"u{i % 100}", name="Bench") for i in range(2000)]
    events += [dict(e, userId=None, traits={"email": f"u{i}@example.com"}) for i, e in enumerate(events[:1000])]
    started = time.perf_counter()
    for _ in range(10):
        for event in events:
            found.matches(org_id, event)
    return (time.perf_counter() - started) * 1e6 / (10 * len(events))


def run() -> list[Figure]:
    with database() as (url, tmp):
        with db.connect(url) as conn:
            off = connections.create(conn, "off", rate_limit=1_000_000_000)
            on = connections.create(conn, "on", rate_limit=1_000_000_000)
            _suppress(conn, "on")
            matching_us = _matching_us(conn, "on")
        env = {"DATABASE_URL": url, "SEGMENT_ELT_FERNET_KEY": os.environ["SEGMENT_ELT_FERNET_KEY"]}
        started = start_receiver({**env, "ARCHIVE_URL": (tmp / "archive").as_uri()}, tmp, workers=os.cpu_count() or 2)
        try:
            figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
            hooks = {"off": (off, started.webhook(off.connection_id)), "on": (on, started.webhook(on.connection_id))}
            for hook in hooks.values():  # connections and suppressions read, workers warm
                saturation_cpu(hook[1], _bodies(hook[0].secret, 500, 1), started.proc.pid)
            for _ in range(ROUNDS):
                for name, (created, hook) in hooks.items():
                    single = saturation_cpu(hook, _bodies(created.secret, 3000, 1), started.proc.pid)
                    figures.setdefault((name, "single"), []).append(single)
                    arrays = saturation_cpu(hook, _bodies(created.secret, 400, 100), started.proc.pid)
                    figures.setdefault((name, "arrays"), []).append((arrays[0] * 100, arrays[1] / 100))
        finally:
            started.stop()
    median = {key: tuple(statistics.median(v[i] for v in runs) for i in (0, 1)) for key, runs in figures.items()}
    shown = {key: [round(v[0]) for v in runs] for key, runs in figures.items()}
    print(f"suppression: per round (req/s or events/s) {shown}; matching alone {matching_us:.2f} µs per event")
    single_ratio = median[("on", "single")][0] / median[("off", "single")][0]
    arrays_ratio = median[("on", "arrays")][0] / median[("off", "arrays")][0]
    return [
        Figure(f"receiver, single events, org suppressing {PEOPLE:,} people / none", single_ratio, "x"),
        Figure("  suppressing / none, req/s", median[("on", "single")][0], f"/ {median[('off', 'single')][0]:,.0f}"),
        Figure(
            "  suppressing / none, CPU µs per request",
            median[("on", "single")][1],
            f"/ {median[('off', 'single')][1]:,.0f}",
        ),
        Figure(
            f"receiver, 100-event arrays, org suppressing {PEOPLE:,} people / none",
            arrays_ratio,
            "x",
            ">= 0.9x",
            arrays_ratio >= 0.9,
        ),
        Figure("  suppressing / none, events/s", median[("on", "arrays")][0], f"/ {median[('off', 'arrays')][0]:,.0f}"),
        Figure(
            "  suppressing / none, CPU µs per event",
            median[("on", "arrays")][1],
            f"/ {median[('off', 'arrays')][1]:,.1f}",
        ),
        Figure("matching one event (privacy.Suppressed.matches, in-process)", matching_us, "µs"),
    ]
