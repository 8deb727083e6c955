"""Gunicorn settings for the receiver, from the RECEIVER_* variables (segment_elt.settings)."""

import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

from segment_elt.settings import SettingsError, settings

try:
    current = settings()
except SettingsError as exc:
    sys.exit(f"receiver: {exc}")

bind = current.receiver_bind
# One process per core, each an event loop (uvicorn's worker, with gunicorn's request limits:
# docs/receiver.md#worker-model); fewer processes make bigger groups (fewer archive writes and
# statements per request, less CPU).
workers = current.receiver_workers or multiprocessing.cpu_count()
worker_class = "segment_elt.ingest.receiver.worker.ReceiverWorker"
# Segment gives up after 10 s; every backend call is bounded well inside that (SEGMENT_ELT_*_TIMEOUT_S).
timeout = current.receiver_timeout_s
# a stop waits for in-flight requests as long as Segment would (10 s, worker.py), then 5 s more
graceful_timeout = 15
keepalive = 5
accesslog = None  # the app logs one structured line per request
errorlog = "-"
loglevel = current.receiver_loglevel
wsgi_app = "receiver:create_asgi_app()"
control_socket_disable = True  # several receivers may run on one host (tests, benchmarks)

# /metrics sums every worker's counters from files here (prometheus_client's multiprocess mode):
# a fresh directory per start unless PROMETHEUS_MULTIPROC_DIR names one (its *.db files are
# removed at start, so counters start from zero with the process, as Prometheus expects).
metrics_dir = current.prometheus_multiproc_dir or Path(tempfile.mkdtemp(prefix="segment-elt-metrics-"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # for the workers' prometheus_client


def on_starting(server):
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
