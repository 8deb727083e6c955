"""Receiver figures, each measured beside the minimal receiver (benchmarks/minimal_receiver.py) in
one run, on the same PostgreSQL, gunicorn and load generator:

- file archive: single-event requests/s of both and their ratio, and the CPU time their gunicorn
  processes spend per request (user + system, from /proc: unlike requests/s it holds when other
  work shares the machine); latency at a fixed 200 requests/s; 100-event arrays on the webhook
  and 100-event batches on the tracking API's /v1/batch;
- S3 stand-in answering every PUT after 40 ms (tests/s3_stand_in.py, a realistic in-region PUT):
  the same, plus the PUTs a saturating load took;
- moto's S3 server (the real S3 protocol, itself the bottleneck): single events and arrays.

The database holds what a live install does: a day partition for each of the default retention's
30 days, 20,000 staged rows in each, since landing probes every partition for a messageId.

Saturation load comes from `wrk` (Debian package `wrk`) when installed, else from Python threads;
the fixed-rate latency from a paced Python client. Every accepted request is durable in both the
archive (fsync'd file or S3 PUT) and PostgreSQL (committed) before its 200.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import boto3
import requests

from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, schema
from segment_elt.ingest import partitions
from segment_elt.local import embedded, samples
from tests.helpers import ROOT, VENV_BIN, MotoS3, free_port, start_receiver, wait_http
from tests.s3_stand_in import SlowS3Process

DURATION_S = int(os.environ.get("BENCH_SECONDS", 10))
# the receiver's default (one per core, receiver/gunicorn.conf.py); the minimal receiver's sync
# workers need two per core to overlap their waits on fsync and PostgreSQL
WORKERS = int(os.environ.get("RECEIVER_WORKERS", os.cpu_count()))
MINIMAL_WORKERS = 2 * os.cpu_count()
PUT_DELAY_MS = 40
# Little's law: 2,000 requests/s that each wait ~45 ms on S3 need ~100 in flight
S3_CONNECTIONS = 256
RETENTION_DAYS = 30  # SEGMENT_ELT_RETENTION_DAYS' default
PAST_ROWS_PER_DAY = 20_000
FERNET_KEY = "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI="


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a gunicorn master and its workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def saturation_cpu(
    url: str, bodies: list[tuple[bytes, dict]], server_pid: int, connections: int = 32
) -> tuple[float, float]:
    """Accepted requests/s at saturation, and the server's CPU microseconds per accepted request."""
    before = cpu_seconds(process_tree(server_pid))
    rate = saturation(url, bodies, connections)
    after = cpu_seconds(process_tree(server_pid))
    spent = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
    return rate, spent * 1e6 / max(rate * DURATION_S, 1)


def keep_days(conn, per_day: int = PAST_ROWS_PER_DAY) -> None:
    """What a live install holds: a partition for each of the retention's days past (and the week
    ahead), each with `per_day` staged rows, so landing's dedup probes them as it would there."""
    today = dt.datetime.now(dt.UTC).date()
    partitions.create_days(conn, today - dt.timedelta(days=RETENTION_DAYS), today + dt.timedelta(days=7))
    conn.execute(
        "insert into raw.segment_events (connection_id, org_id, message_id, event_type, received_at, archive_key,"
        " payload)"
        " select 'past', 'past', 'past-' || d || '-' || n, 'track', %s::date - d + n * interval '1 second',"
        " 'past/' || d, '{}' from generate_series(1, %s) as d, generate_series(1, %s) as n",
        (today, RETENTION_DAYS, per_day),
    )
    conn.execute("vacuum (analyze) raw.segment_events")


@contextmanager
def database():
    """An embedded PostgreSQL for one run; yields (url, a scratch directory)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", FERNET_KEY)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        url = embedded.start(tmp / "pg", server_port=embedded.free_port())
        with db.connect(url) as conn:
            schema.upgrade(conn)
            conn.execute("create table minimal_events (connection_id text, archive_key text, payload jsonb)")
            keep_days(conn)
        yield url, tmp
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def receiver(database_url: str, tmp: Path, archive_env: dict):
    """The project's receiver with its production settings; yields (webhook url, secret, write key, gunicorn's pid)."""
    env = {"DATABASE_URL": database_url, "SEGMENT_ELT_FERNET_KEY": os.environ["SEGMENT_ELT_FERNET_KEY"], **archive_env}
    with db.connect(database_url) as conn:
        created = connections.create(conn, "bench", rate_limit=1_000_000_000)
    started = start_receiver(env, tmp, workers=WORKERS)
    try:
        hook = started.webhook(created.connection_id)
        saturation(hook, _bodies(created.secret, 500, 1), 64, seconds=2)  # every worker's connections and clients made
        yield hook, created.secret, created.write_key, started.proc.pid
    finally:
        started.stop()


@contextmanager
def minimal(database_url: str, tmp: Path, archive: str, extra_env: dict | None = None):
    """The minimal receiver under the same gunicorn (sync workers); yields (webhook url, secret, gunicorn's pid)."""
    port, secret = free_port(), "minimal-secret"
    env = {
        **os.environ,
        **(extra_env or {}),
        "DATABASE_URL": database_url,
        "MINIMAL_SECRET": secret,
        "MINIMAL_ARCHIVE": archive,
    }
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "gunicorn"),
            "-w",
            str(MINIMAL_WORKERS),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "benchmarks.minimal_receiver:create_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "minimal.log").open("wb"),
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc=proc)
        hook = f"http://127.0.0.1:{port}/webhooks/segment/bench"
        saturation(hook, _bodies(secret, 500, 1), 64, seconds=2)  # every worker booted, as for the receiver
        yield hook, secret, proc.pid
    finally:
        proc.terminate()
        proc.wait(15)


def _bodies(secret: str, n: int, per_request: int) -> list[tuple[bytes, dict]]:
    """Signed webhook bodies: (body, headers)."""
    out = []
    for i in range(n):
        events = [samples.event("track", user_id=f"u{i % 100}", name="Bench") for _ in range(per_request)]
        body, signed = samples.batch_body(events) if per_request > 1 else (json.dumps(events[0]).encode(),) * 2
        signature = samples.headers(secret, signed)["X-Signature"]
        out.append((body, {"Content-Type": "application/json", "X-Signature": signature}))
    return out


def _tracking_bodies(write_key: str, n: int, per_request: int) -> list[tuple[bytes, dict]]:
    """Tracking API /v1/batch bodies, as Segment's SDKs send them: (body, headers)."""
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    out = []
    for i in range(n):
        events = [samples.event("track", user_id=f"u{i % 100}", name="Bench") for _ in range(per_request)]
        body = json.dumps({"batch": events, "sentAt": events[-1]["timestamp"]}).encode()
        out.append((body, {"Content-Type": "application/json", "Authorization": auth}))
    return out


def fixed_rate(url: str, secret: str, rate: int = 200, seconds: int = DURATION_S) -> tuple[float, float]:
    """p50 and p99 latency (ms) at a fixed request rate."""
    bodies = _bodies(secret, rate * seconds, 1)
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def worker(offset: int, step: int):
        session = requests.Session()
        for i in range(offset, len(bodies), step):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body, headers = bodies[i]
            began = time.perf_counter()
            answer = session.post(url, data=body, headers=headers)
            took = (time.perf_counter() - began) * 1000
            assert answer.status_code == 200, answer.text
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=worker, args=(k, 32)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def saturation(url: str, bodies: list[tuple[bytes, dict]], connections: int = 32, seconds: int = DURATION_S) -> float:
    """Accepted requests per second at saturation."""
    if shutil.which("wrk"):
        return _wrk(url, bodies, seconds, connections)
    return _python_load(url, bodies, seconds, connections)


def _wrk(url: str, bodies, seconds: int, connections: int = 32) -> float:
    path = "/" + url.split("/", 3)[3]
    lines = ["bodies = {}", "headers = {}"]
    for i, (body, headers) in enumerate(bodies, start=1):
        lines.append(f"bodies[{i}] = {json.dumps(body.decode())}")
        lines.append(
            f"headers[{i}] = {{" + ", ".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in headers.items()) + "}"
        )
    lines.append(f"""counter = 0
bad = 0
request = function()
  counter = counter + 1
  local i = (counter % {len(bodies)}) + 1
  return wrk.format("POST", "{path}", headers[i], bodies[i])
end
response = function(status, headers, body) if status ~= 200 then bad = bad + 1 end end
done = function(summary, latency, requests) io.write("NON200 " .. bad .. "\\n") end""")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines))
    base = "/".join(url.split("/", 3)[:3])
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script.name, base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    rate = float(next(line for line in out.splitlines() if line.startswith("Requests/sec")).split()[1])
    non200 = int(next(line for line in out.splitlines() if line.startswith("NON200")).split()[1])
    total = float(next(line for line in out.splitlines() if "requests in" in line).split()[0])
    return rate * (1 - non200 / total) if total else 0.0


def _python_load(url: str, bodies, seconds: int, connections: int) -> float:
    done = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(k: int):
        session, i = requests.Session(), k
        while time.monotonic() < deadline:
            body, headers = bodies[i % len(bodies)]
            if session.post(url, data=body, headers=headers).status_code == 200:
                with lock:
                    done[0] += 1
            i += connections

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / seconds


def run() -> list[Figure]:
    figures = []
    with database() as (url, tmp):
        minimal_dir = tmp / "minimal"
        minimal_dir.mkdir()
        with minimal(url, tmp, str(minimal_dir)) as (hook, secret, pid):
            baseline, baseline_cpu = saturation_cpu(hook, _bodies(secret, 3000, 1), pid)
        with receiver(url, tmp, {"ARCHIVE_URL": (tmp / "archive").as_uri()}) as (hook, secret, write_key, pid):
            p50, p99 = fixed_rate(hook, secret)
            single, single_cpu = saturation_cpu(hook, _bodies(secret, 3000, 1), pid)
            arrays = saturation(hook, _bodies(secret, 400, 100)) * 100
            tracking = saturation(_tracking_url(hook), _tracking_bodies(write_key, 400, 100)) * 100
        figures += [
            Figure("minimal receiver, single events (file)", baseline, "req/s"),
            Figure("receiver, single events (file archive)", single, "req/s"),
            Figure(
                "receiver / minimal receiver, single events (file)",
                single / baseline,
                "x",
                ">= 1.5x",
                single / baseline >= 1.5,
            ),
            Figure("minimal receiver CPU per request, single events (file)", baseline_cpu, "µs"),
            Figure("receiver CPU per request, single events (file archive)", single_cpu, "µs"),
            # 1.5x the requests on the same cores needs at most 1/1.5 of the CPU per request
            Figure(
                "receiver / minimal receiver CPU per request (file)",
                single_cpu / baseline_cpu,
                "x",
                "<= 0.67x",
                single_cpu / baseline_cpu <= 1 / 1.5,
            ),
            Figure("receiver p50 at 200 req/s (file archive)", p50, "ms", "<= 5 ms", p50 <= 5),
            Figure("receiver p99 at 200 req/s (file archive)", p99, "ms"),
            Figure("receiver, 100-event arrays (file archive)", arrays, "events/s"),
            Figure("receiver, /v1/batch of 100 events (file archive)", tracking, "events/s"),
        ]

        stand_in = SlowS3Process(free_port(), PUT_DELAY_MS / 1000)
        s3 = {"ARCHIVE_URL": "s3://bench/raw", "AWS_ENDPOINT_URL": stand_in.endpoint}
        slow = f"S3 +{PUT_DELAY_MS} ms"
        try:
            with minimal(url, tmp, "s3://bench/minimal", s3) as (hook, secret, _):
                baseline = saturation(hook, _bodies(secret, 3000, 1), S3_CONNECTIONS)
            with receiver(url, tmp, s3) as (hook, secret, write_key, _):
                p50, p99 = fixed_rate(hook, secret)
                puts = stand_in.puts
                single = saturation(hook, _bodies(secret, 3000, 1), S3_CONNECTIONS)
                per_put = single * DURATION_S / max(stand_in.puts - puts, 1)
                arrays = saturation(hook, _bodies(secret, 400, 100), S3_CONNECTIONS) * 100
                tracking = saturation(_tracking_url(hook), _tracking_bodies(write_key, 400, 100), S3_CONNECTIONS) * 100
        finally:
            stand_in.stop()
        figures += [
            Figure(f"minimal receiver, single events ({slow})", baseline, "req/s"),
            Figure(f"receiver, single events ({slow})", single, "req/s", ">= 2,000 req/s", single >= 2000),
            Figure(f"receiver, requests per PUT at saturation ({slow})", per_put, "requests", ">= 20", per_put >= 20),
            Figure(f"receiver p50 at 200 req/s ({slow})", p50, "ms", "<= 60 ms", p50 <= 60),
            Figure(f"receiver p99 at 200 req/s ({slow})", p99, "ms", "<= 200 ms", p99 <= 200),
            Figure(f"receiver, 100-event arrays ({slow})", arrays, "events/s", ">= 40,000 events/s", arrays >= 40000),
            Figure(f"receiver, /v1/batch of 100 events ({slow})", tracking, "events/s"),
        ]

        moto = MotoS3(free_port())
        moto.start()
        try:
            boto3.client("s3", endpoint_url=moto.endpoint).create_bucket(Bucket="bench")
            with receiver(url, tmp, {"ARCHIVE_URL": "s3://bench/raw", "AWS_ENDPOINT_URL": moto.endpoint}) as (
                hook,
                secret,
                _,
                _,
            ):
                single = saturation(hook, _bodies(secret, 3000, 1), S3_CONNECTIONS)
                arrays = saturation(hook, _bodies(secret, 400, 100), S3_CONNECTIONS) * 100
        finally:
            moto.stop()
        figures += [
            Figure("receiver, single events (moto S3 server)", single, "req/s"),
            Figure("receiver, 100-event arrays (moto S3 server)", arrays, "events/s"),
        ]
    return figures


def _tracking_url(hook: str) -> str:
    return hook.split("/webhooks")[0] + "/v1/batch"
