"""GET /metrics through a real gunicorn with several workers: the counters are summed over the
workers, in Prometheus' text format, by status and connection-independent reason."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from segment_elt.local import samples
from tests.receiver.conftest import make_hook


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    answer = requests.get(base + "/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_sum_every_worker(db, archive_url, receiver_factory):
    receiver = receiver_factory(workers=3)
    hook = make_hook(db, receiver, rate_limit=20)
    event = samples.event("track", user_id="u1", name="Report Created")
    statuses = [hook.post(event).status_code for _ in range(12)]  # one new, the rest duplicates of it
    statuses += [hook.post(event, secret="wrong").status_code, hook.post(b"[").status_code]
    statuses.append(hook.post([samples.event("track", user_id="u2", name="x")] * 15).status_code)  # ~8 tokens left
    assert statuses.count(200) == 12 and statuses[-3:] == [401, 400, 429]
    figures = scrape(receiver.url)
    assert figures[("segment_elt_receiver_requests_total", (("reason", "accepted"), ("status", "200")))] == 12
    assert figures[("segment_elt_receiver_requests_total", (("reason", "bad_signature"), ("status", "401")))] == 1
    assert figures[("segment_elt_receiver_requests_total", (("reason", "bad_body"), ("status", "400")))] == 1
    assert figures[("segment_elt_receiver_requests_total", (("reason", "rate_limited"), ("status", "429")))] == 1
    assert figures[("segment_elt_receiver_events_total", (("outcome", "landed"),))] == 1
    assert figures[("segment_elt_receiver_events_total", (("outcome", "duplicate"),))] == 11
    assert figures[("segment_elt_receiver_rate_limited_events_total", ())] == 15
    assert figures[("segment_elt_receiver_request_seconds_count", ())] == 15
    assert hook.connection_id not in requests.get(receiver.url + "/metrics", timeout=10).text
    # every worker answers with the same sums
    assert {
        scrape(receiver.url)[("segment_elt_receiver_events_total", (("outcome", "duplicate"),))] for _ in range(6)
    } == {11}


def test_pipeline_lag_is_how_long_the_oldest_event_not_in_the_marts_has_waited(db, archive_url, receiver_factory):
    from segment_elt.dag_ids import ROLLUPS
    from segment_elt.pipeline import runs

    receiver = receiver_factory(workers=1)
    hook = make_hook(db, receiver)
    assert scrape(receiver.url)[("segment_elt_pipeline_lag_seconds", ())] == 0  # nothing staged, nothing waits
    assert hook.post(samples.event("track", user_id="u1", name="Report Created")).status_code == 200
    db.execute("update raw.segment_events set loaded_at = loaded_at - interval '5 minutes'")  # it landed 5 min ago
    waited = scrape(receiver.url)[("segment_elt_pipeline_lag_seconds", ())]
    assert 300 <= waited < 360
    newest = db.execute("select max(loaded_at) from raw.segment_events").fetchone()[0]
    assert scrape(receiver.url)[("segment_elt_newest_landed_timestamp_seconds", ())] == newest.timestamp()

    plan = runs.Plan(True, {}, 1, newest.isoformat())  # a run that took that event in
    runs.start_run(db, ROLLUPS, "manual__lag", "manual", plan, run_is_live=lambda *_: False)
    runs.finish_run(db, ROLLUPS, "manual__lag", "success")
    figures = scrape(receiver.url)
    assert figures[("segment_elt_pipeline_lag_seconds", ())] == 0
    assert figures[("segment_elt_marts_through_timestamp_seconds", ())] == newest.timestamp()
