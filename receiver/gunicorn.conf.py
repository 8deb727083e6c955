"""Gunicorn settings for the receiver, from the RECEIVER_* variables (segment_elt.settings)."""

import multiprocessing
import sys

from segment_elt.settings import SettingsError, settings

try:
    current = settings()
except SettingsError as exc:
    sys.exit(f"receiver: {exc}")

bind = current.receiver_bind
workers = current.receiver_workers or multiprocessing.cpu_count() * 2
threads = current.receiver_threads
worker_class = "gthread" if threads > 1 else "sync"
# Segment gives up after 10 s; every backend call is bounded well inside that (SEGMENT_ELT_*_TIMEOUT_S).
timeout = current.receiver_timeout_s
graceful_timeout = 10
keepalive = 5
accesslog = None  # the app logs one structured line per request
errorlog = "-"
loglevel = current.receiver_loglevel
limit_request_field_size = 16384
wsgi_app = "receiver:create_app()"
control_socket_disable = True  # several receivers may run on one host (tests, benchmarks)
