"""The rejects log: every 4xx/5xx answered for a known connection, for debugging a connection.

`control.rejects` keeps, per connection, the newest KEEP rejections: time, status, reason, body
size, and for a 400 the first HEAD_BYTES of the body (never headers, never secrets). Writing is
best effort and off the 200 path. A flood of one refusal (a client past the org's cap, a wrong
secret) is folded: per process, the same (connection, status, reason) is written at most once
a second, and each row's `repeats` counts it and the identical refusals folded since that
process's previous row of it.
"""

from __future__ import annotations

import logging
import threading
import time

from segment_elt.ingest.receiver.backends import Backends, DatabaseUnavailable

KEEP = 1000
HEAD_BYTES = 1024
FOLD_S = 1.0
log = logging.getLogger("receiver")


class RejectsLog:
    def __init__(self, backends: Backends):
        self.backends = backends
        self._lock = threading.Lock()
        self._folded: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (last written, not written since)

    def record(self, connection_id: str, status: int, reason: str, body_bytes: int, head: bytes | None) -> None:
        key = (connection_id, status, reason)
        now = time.monotonic()
        with self._lock:
            written, pending = self._folded.get(key, (0.0, 0))
            if now - written < FOLD_S:
                self._folded[key] = (written, pending + 1)
                return
            self._folded[key] = (now, 0)
            if len(self._folded) > 10_000:  # forget old keys; only their fold counts are lost
                self._folded = {k: v for k, v in self._folded.items() if now - v[0] < FOLD_S}
        text = head[:HEAD_BYTES].decode("utf-8", "replace").replace("\x00", "\ufffd") if head is not None else None
        try:
            self.backends.run(lambda c: _insert(c, connection_id, status, reason, body_bytes, text, 1 + pending))
        except DatabaseUnavailable as exc:
            log.warning("rejects log not written", extra={"fields": {"connection": connection_id, "reason": str(exc)}})


def _insert(
    conn, connection_id: str, status: int, reason: str, body_bytes: int, head: str | None, repeats: int
) -> None:
    """Insert for a connection that exists (unknown ids are not logged), then drop what is past
    the newest KEEP of that connection (an index range scan from the KEEP-th row)."""
    inserted = conn.execute(
        "insert into control.rejects (connection_id, status, reason, body_bytes, body_head, repeats)"
        " select connection_id, %s, %s, %s, %s, %s from control.connections where connection_id = %s",
        (status, reason[:500], body_bytes, head, repeats, connection_id),
    ).rowcount
    if inserted:
        conn.execute(
            "delete from control.rejects where connection_id = %s and rejected_at < ("
            " select rejected_at from control.rejects where connection_id = %s"
            " order by rejected_at desc offset %s limit 1)",
            (connection_id, connection_id, KEEP - 1),
        )
