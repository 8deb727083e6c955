"""Gunicorn settings for the receiver; each can be overridden by its RECEIVER_* variable."""

import multiprocessing
import os

bind = os.environ.get("RECEIVER_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("RECEIVER_WORKERS", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("RECEIVER_THREADS", 1))
worker_class = "gthread" if threads > 1 else "sync"
# Segment gives up after 10 s; every backend call is bounded well inside that (see segment_elt.settings).
timeout = int(os.environ.get("RECEIVER_TIMEOUT", 30))
graceful_timeout = 10
keepalive = 5
accesslog = None  # the app logs one structured line per request
errorlog = "-"
loglevel = os.environ.get("RECEIVER_LOGLEVEL", "info")
limit_request_field_size = 16384
wsgi_app = "receiver:create_app()"
control_socket_disable = True  # several receivers may run on one host (tests, benchmarks)
