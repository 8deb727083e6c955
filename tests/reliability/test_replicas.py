"""Receivers as replicas: three receivers under gunicorn, as receiver/gunicorn.conf.py runs them,
behind Debian's haproxy, on one PostgreSQL and one archive. The org's cap holds across the
replicas (its token bucket is in PostgreSQL, docs/receiver.md#rate-limit), and a replica killed
with SIGKILL under load (its host died) loses nothing: every event answered 200 is staged once
and archived."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import start_haproxy
from tests.receiver.conftest import make_hook
from tests.receiver.test_rate_limit import burst_is_capped
from tests.reliability.test_faults_under_load import check_exactly_once, run_load

MISSING = "haproxy is missing: apt-get install haproxy (.ci/run installs it)"
pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None and os.environ.get("SEGMENT_ELT_CI") != "1", reason=MISSING
)


@pytest.fixture
def replicas(receiver_factory, tmp_path):
    """Three receivers of one worker each (two cores on this machine) and haproxy in front."""
    receivers = [receiver_factory(workers=1) for _ in range(3)]
    balancer = start_haproxy(receivers, tmp_path)
    yield balancer, receivers
    balancer.stop()


def answered_200(receiver) -> float:
    """Requests this replica answered 200, from its own /metrics."""
    text = requests.get(f"{receiver.url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "segment_elt_receiver_requests_total" and sample.labels.get("status") == "200"
    )


def test_the_org_cap_holds_across_replicas(db, archive_url, replicas):
    balancer, receivers = replicas
    accepted = burst_is_capped(db, archive_url, make_hook(db, balancer, org="burst", rate_limit=600))
    per_replica = [answered_200(r) for r in receivers]
    assert all(count > 0 for count in per_replica), per_replica  # every replica took part
    assert sum(per_replica) == accepted


def test_a_replica_killed_under_load_loses_nothing(db, s3_archive_url, replicas):
    balancer, receivers = replicas
    hook = make_hook(db, balancer, rate_limit=1_000_000)
    doomed = receivers[1]

    def chaos():
        deadline = time.monotonic() + 30
        while answered_200(doomed) == 0:  # kill it once it is taking its share
            assert time.monotonic() < deadline, "the replica answered nothing in 30 s"
            time.sleep(0.05)
        for pid in [doomed.proc.pid, *doomed.worker_pids()]:  # the master and its worker, mid-request
            os.kill(pid, signal.SIGKILL)

    outcome, sent = run_load(hook, chaos)
    assert doomed.proc.wait(5) == -signal.SIGKILL
    assert answered_200(receivers[0]) > 0 and answered_200(receivers[2]) > 0
    check_exactly_once(db, hook, s3_archive_url, outcome, sent)
