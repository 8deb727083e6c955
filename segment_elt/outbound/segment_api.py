"""A direct client for Segment's HTTP Tracking API (`POST /v1/batch`, Basic auth with the write key).

Why not Segment's analytics-python: it queues messages in a background thread and batches
them on its own, so the caller cannot know which messages Segment accepted. The outbound sync
must mark sent only what was accepted, so it sends each batch itself and reads the answer.

Limits are Segment's own library's (analytics-python): a request body of at most 475,000 bytes,
under the API's 500 KB (a bigger one is answered 400, which would stop the connection), and
events of at most 32 KiB (oversized events are returned as skipped, never sent), both counted on
the exact bytes posted. 429 and 5xx are retried with exponential backoff and jitter, honouring
Retry-After (seconds or an HTTP date) up to 300 s, so a task never sleeps unbounded; any other
4xx raises SegmentRejected with Segment's answer.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from segment_elt.settings import settings

SEGMENT_API_BASES = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
MAX_EVENT_BYTES = 32 * 1024
MAX_BODY_BYTES = 475_000
MAX_RETRY_AFTER_S = 300.0
BODY_START, BODY_END, SEPARATOR = b'{"batch":[', b"]}", b","


def segment_api_url(region: str) -> str:
    """Base of Segment's HTTP Tracking API for a region, or the SEGMENT_API_URL override."""
    override = settings().segment_api_url
    return override.rstrip("/") if override else SEGMENT_API_BASES[region]


class SegmentFailed(RuntimeError):
    """A send that stopped; `outcome` holds what Segment accepted before it."""

    outcome: Outcome


class SegmentRejected(SegmentFailed):
    """Segment refused the request (400/401/403/...); retrying will not help."""

    def __init__(self, status: int, body: str):
        hint = {
            401: "the write key is wrong or revoked",
            403: "the write key may not send to this source",
            400: "Segment found the batch malformed",
        }.get(status, "see Segment's answer")
        super().__init__(f"Segment answered {status} ({hint}): {body[:300]}")
        self.status = status


class SegmentUnavailable(SegmentFailed):
    """429/5xx or no answer, still after every retry."""


@dataclass
class Outcome:
    accepted: list[dict] = field(default_factory=list)
    oversized: list[dict] = field(default_factory=list)


@dataclass
class SegmentClient:
    write_key: str
    region: str = "us"
    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_retry_after_s: float = MAX_RETRY_AFTER_S
    timeout_s: float = 15.0

    @property
    def url(self) -> str:
        return f"{segment_api_url(self.region)}/v1/batch"

    def send(self, messages: list[dict]) -> Outcome:
        """Send messages in as few batches as the limits allow; returns what was accepted.

        On a refusal or exhausted retries, raises; messages of earlier batches were accepted and
        are in the exception's `outcome` attribute.
        """
        outcome = Outcome()
        batch: list[dict] = []
        encoded: list[bytes] = []
        size = len(BODY_START) + len(BODY_END)
        for message in messages:
            data = json.dumps(message, separators=(",", ":")).encode()
            if len(data) > MAX_EVENT_BYTES:
                outcome.oversized.append(message)
                continue
            if batch and size + len(SEPARATOR) + len(data) > MAX_BODY_BYTES:
                self._post(batch, encoded, outcome)
                batch, encoded, size = [], [], len(BODY_START) + len(BODY_END)
            size += len(data) + (len(SEPARATOR) if batch else 0)
            batch.append(message)
            encoded.append(data)
        if batch:
            self._post(batch, encoded, outcome)
        return outcome

    def probe(self) -> tuple[int, str]:
        """Send one test track event, once; returns Segment's status and body (0 and the reason if nothing answered)."""
        message: dict[str, Any] = {
            "type": "track",
            "event": "Segment ELT Test",
            "anonymousId": "segment-elt-test",
            "messageId": f"segment-elt-test-{time.time_ns()}",
            "properties": {"source": "segment-elt"},
        }
        try:
            answer = requests.post(
                self.url, json={"batch": [message]}, auth=(self.write_key, ""), timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            return 0, str(exc)
        return answer.status_code, answer.text

    def _post(self, batch: list[dict], encoded: list[bytes], outcome: Outcome) -> None:
        body = BODY_START + SEPARATOR.join(encoded) + BODY_END
        for attempt in range(self.retries + 1):
            try:
                answer = requests.post(
                    self.url,
                    data=body,
                    auth=(self.write_key, ""),
                    timeout=self.timeout_s,
                    headers={"Content-Type": "application/json", "User-Agent": "segment-elt"},
                )
            except requests.RequestException as exc:
                status, wait, text = None, None, str(exc)
            else:
                if answer.status_code < 300:
                    outcome.accepted.extend(batch)
                    return
                status, text = answer.status_code, answer.text
                wait = retry_after_s(answer.headers.get("Retry-After"), self.max_retry_after_s)
                if status != 429 and status < 500:
                    rejected = SegmentRejected(status, text)
                    rejected.outcome = outcome
                    raise rejected
            if attempt == self.retries:
                break
            backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            time.sleep(max(wait or 0.0, backoff))
        error = SegmentUnavailable(
            f"Segment did not accept a batch after {self.retries + 1} attempts "
            f"(last: {status or 'no answer'} {text[:200]})"
        )
        error.outcome = outcome
        raise error


def retry_after_s(value: str | None, cap_s: float) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date), at most `cap_s`."""
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        try:
            wait = (email.utils.parsedate_to_datetime(value) - dt.datetime.now(dt.UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(cap_s, max(0.0, wait))
