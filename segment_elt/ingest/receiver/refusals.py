"""A refused request: the Refused every check raises, and the one path every refusal answer takes
(the rejects log, Retry-After); the webhook and the tracking API only shape the answer's body."""

from __future__ import annotations

from segment_elt.ingest.receiver.rejects import RejectsLog

DATABASE_DOWN = "staging database unavailable; retry later"


class Refused(Exception):
    """A refusal: its status, the message the client reads, a reason code for /metrics (the
    same for every connection) and Retry-After."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.retry_after = status, reason, message, retry_after


def record_refusal(
    rejects: RejectsLog, connection_id: str | None, refused: Refused, body_bytes: int, sent: bytes
) -> list[tuple[str, str]]:
    """Keep a refusal of a known connection in the rejects log (a database write; not when the
    database is what failed), with the body's head for a 400; returns the answer's extra headers."""
    if connection_id is not None and refused.status != 404 and refused.message != DATABASE_DOWN:
        rejects.record(
            connection_id, refused.status, refused.message, body_bytes, sent if refused.status == 400 else None
        )
    return [] if refused.retry_after is None else [("Retry-After", str(refused.retry_after))]
