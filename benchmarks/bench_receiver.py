"""Receiver figures: latency at a fixed 200 requests/s and saturation throughput (single events and
100-event arrays on the webhook, 100-event batches on the tracking API's /v1/batch), with the file
archive and with the S3 archive on moto's server.

Saturation load comes from `wrk` (Debian package `wrk`) when installed, else from Python processes;
the fixed-rate latency from a paced Python client. Every accepted request is durable in both the
archive (fsync'd file or S3 PUT) and PostgreSQL (committed) before its 200.
"""

from __future__ import annotations

import base64
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
from segment_elt.local import embedded, samples
from tests.helpers import MotoS3, free_port, start_receiver

DURATION_S = int(os.environ.get("BENCH_SECONDS", 10))


@contextmanager
def stack(archive: str):
    """An embedded PostgreSQL, an archive and a receiver; yields (hook url, secret, write key)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto = None
    try:
        url = embedded.start(tmp / "pg", server_port=embedded.free_port())
        env = {"DATABASE_URL": url, "SEGMENT_ELT_FERNET_KEY": os.environ["SEGMENT_ELT_FERNET_KEY"]}
        if archive == "s3":
            moto = MotoS3(free_port())
            moto.start()
            boto3.client("s3", endpoint_url=moto.endpoint).create_bucket(Bucket="bench")
            env.update(ARCHIVE_URL="s3://bench/raw", AWS_ENDPOINT_URL=moto.endpoint)
        else:
            env["ARCHIVE_URL"] = (tmp / "archive").as_uri()
        with db.connect(url) as conn:
            schema.upgrade(conn)
            created = connections.create(conn, "bench", rate_limit=1_000_000_000)
        receiver = start_receiver(env, tmp, workers=int(os.environ.get("RECEIVER_WORKERS", 2 * os.cpu_count())))
        try:
            yield receiver.webhook(created.connection_id), created.secret, created.write_key
        finally:
            receiver.stop()
    finally:
        if moto:
            moto.stop()
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


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

    threads = [threading.Thread(target=worker, args=(k, 8)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def saturation(url: str, bodies: list[tuple[bytes, dict]], seconds: int = DURATION_S) -> float:
    """Accepted requests per second at saturation."""
    if shutil.which("wrk"):
        return _wrk(url, bodies, seconds)
    return _python_load(url, bodies, seconds)


def _wrk(url: str, bodies, seconds: int, connections: int = 32) -> float:
    path = "/" + url.split("/", 3)[3]
    lines = ["bodies = {}", "headers = {}"]
    for i, (body, headers) in enumerate(bodies, start=1):
        lines.append(f"bodies[{i}] = {json.dumps(body.decode())}")
        lines.append(f"headers[{i}] = {{" + ", ".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in headers.items()) + "}")
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
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script.name, base],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rate = float(next(line for line in out.splitlines() if line.startswith("Requests/sec")).split()[1])
    non200 = int(next(line for line in out.splitlines() if line.startswith("NON200")).split()[1])
    total = float(next(line for line in out.splitlines() if "requests in" in line).split()[0])
    return rate * (1 - non200 / total) if total else 0.0


def _python_load(url: str, bodies, seconds: int) -> float:
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
            i += 16

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / seconds


def run() -> list[Figure]:
    figures = []
    for archive in ("file", "s3"):
        with stack(archive) as (url, secret, write_key):
            p50, p99 = fixed_rate(url, secret)
            single = saturation(url, _bodies(secret, 3000, 1))
            batch = saturation(url, _bodies(secret, 400, 100)) * 100
            tracking = saturation(url.split("/webhooks")[0] + "/v1/batch", _tracking_bodies(write_key, 400, 100)) * 100
        target = archive == "file"
        figures += [
            Figure(f"receiver p50 at 200 req/s ({archive} archive)", p50, "ms", "<= 5 ms" if target else "", p50 <= 5 if target else None),
            Figure(f"receiver p99 at 200 req/s ({archive} archive)", p99, "ms"),
            Figure(f"receiver saturation, single events ({archive} archive)", single, "req/s",
                   ">= 2,000 req/s" if target else "", single >= 2000 if target else None),
            Figure(f"receiver saturation, 100-event arrays ({archive} archive)", batch, "events/s",
                   ">= 20,000 events/s" if target else "", batch >= 20000 if target else None),
            Figure(f"receiver saturation, /v1/batch of 100 events ({archive} archive)", tracking, "events/s"),
        ]
    return figures
