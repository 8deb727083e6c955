"""Group commit: requests of one connection that arrive together share one archive object, one
token take and one staging statement (docs/receiver.md#group-commit).

A few writer threads per process each take everything queued (up to a group's limits), write it
and only then wake each request with its own answer; nobody waits for a group to fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from segment_elt.control import privacy
from segment_elt.ingest import landing
from segment_elt.ingest.archive import ArchiveUnavailable, group_object, object_key
from segment_elt.ingest.receiver.backends import Backends, Connection, DatabaseUnavailable
from segment_elt.ingest.receiver.metrics import BACKEND_ERRORS, GROUP_REQUESTS, RATE_LIMITED_EVENTS, SUPPRESSED_EVENTS
from segment_elt.ingest.receiver.refusals import DATABASE_DOWN, Refused

log = logging.getLogger("receiver")
SUPPRESSED = "suppressed: events of suppressed people (privacy suppress) accepted, not landed"
OVERLOADED = "receiver busy: more requests wait for the archive than it holds; retry later"


@dataclass(eq=False)
class Pending:
    """One request waiting for its group: what it lands, and, once written, its answer."""

    connection: Connection
    text: str  # the exact body, decoded (bodies are UTF-8, so its bytes come back exactly)
    events: list[dict]
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    new: int = 0
    suppressed: int = 0  # events of suppressed people, accepted and not landed
    refused: Refused | None = None
    answered: bool = False
    wake: Callable[[], object] = lambda: None  # set by GroupCommitter.land or land_async

    @property
    def size(self) -> int:
        return len(self.text)

    def answer(self, new: int = 0, refused: Refused | None = None) -> None:
        self.new, self.refused, self.answered = new, refused, True
        self.wake()

    def result(self) -> int:
        if self.refused is not None:
            raise self.refused
        return self.new


class GroupCommitter:
    """The writer threads of one process (started as the worker boots, or by its first request)."""

    def __init__(self, backends: Backends, rejects=None):
        self.backends, self.rejects = backends, rejects
        settings = backends.settings
        self.writers = settings.receiver_group_writers
        self.max_requests = settings.receiver_group_max_requests
        self.max_bytes = settings.receiver_group_max_bytes
        self.max_queued_bytes = settings.receiver_queue_max_bytes
        self.retry_after = settings.retry_after_s
        self._queue: deque[Pending] = deque()
        self._queued_bytes = 0
        self._ready = threading.Condition()
        self._pid: int | None = None

    def start(self) -> None:
        """Start this process's writers (the ASGI app's lifespan startup calls it; the first request
        does otherwise), each with its database connection and the archive client made."""
        with self._ready:
            self._start()

    def _start(self) -> None:
        if self._pid != os.getpid():  # threads do not survive gunicorn's fork
            self._pid = os.getpid()
            for i in range(self.writers):
                threading.Thread(target=self._write_groups, name=f"group-writer-{i}", daemon=True).start()

    def land(self, pending: Pending) -> int:
        """Queue the request, wait (blocking this thread) for its group to be written; returns its
        new events or raises Refused."""
        unanswered = threading.Lock()  # a bare lock is the cheapest one-shot wake-up (an Event is a Condition)
        unanswered.acquire()
        pending.wake = unanswered.release
        self._queue_up(pending)
        unanswered.acquire()
        return pending.result()

    async def land_async(self, pending: Pending) -> int:
        """`land` for the event loop: the writer wakes the loop, which resumes the request."""
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        pending.wake = lambda: loop.call_soon_threadsafe(_resolve, answered)
        self._queue_up(pending)
        await answered
        return pending.result()

    def _queue_up(self, pending: Pending) -> None:
        """Queue the request, or refuse it (503) when the bodies already waiting for a writer
        take RECEIVER_QUEUE_MAX_BYTES: the archive is slower than requests arrive, and memory
        is what would run out."""
        with self._ready:
            self._start()
            if self._queue and self._queued_bytes + pending.size > self.max_queued_bytes:
                raise Refused(503, "overloaded", OVERLOADED, self.retry_after)
            self._queue.append(pending)
            self._queued_bytes += pending.size
            self._ready.notify()

    def _next_group(self) -> list[Pending]:
        with self._ready:
            while not self._queue:
                self._ready.wait()
            group = [self._queue.popleft()]
            size = group[0].size
            while self._queue and len(group) < self.max_requests and size + self._queue[0].size <= self.max_bytes:
                group.append(self._queue.popleft())
                size += group[-1].size
            self._queued_bytes -= size
            return group

    def _write_groups(self) -> None:
        self.backends.warm_up()
        while True:
            group = self._next_group()
            by_connection: dict[str, list[Pending]] = {}
            for pending in group:
                by_connection.setdefault(pending.connection.connection_id, []).append(pending)
            for requests in by_connection.values():
                try:
                    commit(self.backends, requests, self.rejects)
                except Exception:  # never leave a request waiting, never kill the writer
                    log.exception("group commit failed")
                    for pending in requests:
                        if not pending.answered:
                            pending.answer(refused=_unavailable(self.backends, "database", "staging database"))


def _resolve(answered: asyncio.Future) -> None:
    if not answered.done():  # not cancelled meanwhile
        answered.set_result(None)


def commit(backends: Backends, requests: list[Pending], rejects=None) -> None:
    """Write one connection's group and answer each of its requests."""
    connection = requests[0].connection
    connection_id, unavailable = connection.connection_id, backends.settings.retry_after_s
    try:
        requests = _without_suppressed(backends, requests, rejects)
        if not requests:
            return
        takes = backends.run(
            lambda c: c.execute(
                "select outcome, retry_after_s from control.take_tokens_each(%s, %s)",
                (connection_id, [len(p.events) for p in requests]),
            ).fetchall()
        )
    except DatabaseUnavailable:
        for pending in requests:
            pending.answer(refused=Refused(503, "database_unavailable", DATABASE_DOWN, unavailable))
        return
    accepted = []
    for pending, (outcome, wait_s) in zip(requests, takes, strict=True):
        if outcome == "ok":
            accepted.append(pending)
        elif outcome == "gone":
            backends.forget(connection_id)
            pending.answer(
                refused=Refused(404, "unknown_connection", "unknown or deleted connection: check the webhook URL")
            )
        else:
            RATE_LIMITED_EVENTS.inc(len(pending.events))
            pending.answer(
                refused=Refused(
                    429,
                    "rate_limited",
                    f"the org's events-per-minute cap is reached; retry in {math.ceil(wait_s)} s",
                    max(1, math.ceil(wait_s)),
                )
            )
    if not accepted:
        return
    GROUP_REQUESTS.observe(len(accepted))
    body = group_object([(p.received_at, p.text) for p in accepted])
    key = object_key(backends.archive.prefix, connection.org_id, connection_id, accepted[0].received_at, body)
    try:
        written = backends.archive.put(key, body)
        new = backends.run(
            lambda c: landing.insert_group(
                c,
                connection_id=connection_id,
                org_id=connection.org_id,
                archive_key=key,
                requests=[(p.received_at, p.text, p.events) for p in accepted],
                archive_digest=written,
                note_duplicates=True,
            )
        )
    except (ArchiveUnavailable, DatabaseUnavailable) as exc:
        _refund(backends, connection.org_id, sum(len(p.events) for p in accepted))
        backend, which = (
            ("archive", "archive") if isinstance(exc, ArchiveUnavailable) else ("database", "staging database")
        )
        log.warning(
            "landing failed",
            extra={
                "fields": {
                    "connection": connection_id,
                    "backend": which,
                    "requests": len(accepted),
                    "reason": str(exc)[:300],
                }
            },
        )
        for pending in accepted:
            pending.answer(refused=_unavailable(backends, backend, which))
        return
    for pending, count in zip(accepted, new, strict=True):
        pending.answer(new=count)


def _without_suppressed(backends: Backends, requests: list[Pending], rejects) -> list[Pending]:
    """The requests with the events of the org's suppressed people taken out (their bodies
    rewritten, other events' bytes kept); a request left empty is answered 200 at once. Each
    request that lost events is noted in the rejects log as 'suppressed' (status 200). A
    suppressed identify or alias suppresses the anonymousId it links (Backends.suppress_linked),
    for the events after it too."""
    org_id = requests[0].connection.org_id
    found = backends.suppressed(org_id)
    if found is None:
        return requests
    left = []
    for pending in requests:
        drop = []
        for event in pending.events:
            hit = found.matches(org_id, event)
            drop.append(hit)
            if hit and (linked := privacy.linked_anonymous_id(event)) is not None:
                user_id = privacy.user_id_of(event)
                if user_id is not None and not found.holds(org_id, privacy.ANONYMOUS_ID, linked):
                    backends.suppress_linked(org_id, user_id, linked)
                    found = backends.suppressed(org_id) or found
        pending.suppressed = sum(drop)
        if pending.suppressed:
            SUPPRESSED_EVENTS.inc(pending.suppressed)
            if rejects is not None:
                rejects.record(
                    pending.connection.connection_id,
                    200,
                    SUPPRESSED,
                    len(pending.text),
                    None,
                )
            text = landing.without_events(pending.text, drop)
            if text is None:
                pending.answer(new=0)
                continue
            pending.text, pending.events = (
                text,
                [e for e, dropped in zip(pending.events, drop, strict=True) if not dropped],
            )
        left.append(pending)
    return left


def _unavailable(backends: Backends, backend: str, which: str) -> Refused:
    BACKEND_ERRORS.labels(backend).inc()
    return Refused(503, f"{backend}_unavailable", f"{which} unavailable; retry later", backends.settings.retry_after_s)


def _refund(backends: Backends, org_id: str, events: int) -> None:
    with contextlib.suppress(DatabaseUnavailable):  # the bucket refills by itself; a lost refund delays the retry
        backends.run(lambda c: c.execute("select control.refund_tokens(%s, %s)", (org_id, events)))
