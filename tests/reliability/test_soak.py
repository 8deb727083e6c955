"""Soak: a steady rate of signed events for a while; every event lands, worker memory stays flat.
`make test` runs 25 s; the slow variant (make bench) runs 10 minutes."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from segment_elt.local import samples
from tests.receiver.conftest import make_hook


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def soak(db, receiver, seconds: int, rate: int = 50) -> dict:
    hook = make_hook(db, receiver, rate_limit=1_000_000)
    session = requests.Session()
    warm = [hook.post(samples.event("track", user_id="warm")) for _ in range(200)]
    assert all(a.status_code == 200 for a in warm)
    start_rss = {pid: rss_mb(pid) for pid in receiver.worker_pids()}
    sent, retried, began = 0, 0, time.monotonic()
    while time.monotonic() - began < seconds:
        body = json.dumps(samples.event("track", user_id=f"u{sent % 100}", properties={"i": sent})).encode()
        for _ in range(20):  # as Segment does: a 503 (e.g. a stalled database) is retried
            answer = session.post(hook.url, data=body, headers=samples.headers(hook.secret, body))
            if answer.status_code != 503:
                break
            retried += 1
            time.sleep(0.5)
        assert answer.status_code == 200, answer.text
        sent += 1
        time.sleep(max(0.0, began + sent / rate - time.monotonic()))
    end_rss = {pid: rss_mb(pid) for pid in receiver.worker_pids()}
    staged = db.execute(
        "select count(*) from raw.segment_events where connection_id = %s", (hook.connection_id,)
    ).fetchone()[0]
    assert staged == sent + 200
    growth = max(end_rss[p] - start_rss[p] for p in start_rss if p in end_rss)
    return {
        "sent": sent,
        "retried_503": retried,
        "seconds": seconds,
        "rss_growth_mb": round(growth, 1),
        "rss_mb": round(max(end_rss.values()), 1),
    }


def test_soak_short(db, archive_url, receiver_factory):
    figures = soak(db, receiver_factory(workers=2), int(os.environ.get("SOAK_SECONDS", 25)))
    assert figures["rss_growth_mb"] < 15, figures


@pytest.mark.slow
def test_soak_ten_minutes(db, archive_url, receiver_factory):
    figures = soak(db, receiver_factory(workers=2), 600, rate=100)
    print(f"soak figures: {figures}")
    assert figures["rss_growth_mb"] < 15, figures
