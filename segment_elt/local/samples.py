"""Segment events shaped like the real thing (all six call types, full context), and signing.

Used by `make demo` and the tests, so both post what Segment's Webhooks destination posts.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid

from segment_elt.ingest.signing import sign

LIBRARY = {"name": "analytics.js", "version": "next-1.70.0"}
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)


def headers(secret: str, body: bytes) -> dict[str, str]:
    """The headers Segment's Webhooks destination sends with a body."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "Segment.io/1.0",
        "X-Signature": sign(secret, body),
    }


def batch_body(events: list[dict]) -> tuple[bytes, bytes]:
    """A batch as the Actions destination sends it: the array, and the first element it signs."""
    body = json.dumps(events, separators=(",", ":")).encode()
    first = json.dumps(events[0], separators=(",", ":")).encode()
    return body, first


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(
    kind: str,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    at: dt.datetime | None = None,
    name: str | None = None,
    group_id: str | None = None,
    traits: dict | None = None,
    properties: dict | None = None,
    context_group_id: str | None = None,
    message_id: str | None = None,
) -> dict:
    """One Segment call of type `kind` (track, page, screen, identify, group, alias)."""
    at = at or dt.datetime.now(dt.UTC)
    context = {
        "library": LIBRARY,
        "ip": "203.0.113.7",
        "locale": "en-US",
        "userAgent": USER_AGENT,
        "page": {"path": "/app", "url": "https://app.example.com/app", "title": "App", "referrer": ""},
        "timezone": "Europe/Paris",
    }
    if context_group_id:
        context["groupId"] = context_group_id
    payload: dict = {
        "type": kind,
        "messageId": message_id or f"ajs-next-{uuid.uuid4().hex}",
        "anonymousId": anonymous_id or str(uuid.uuid5(uuid.NAMESPACE_URL, user_id or "anon")),
        "context": context,
        "integrations": {},
        "originalTimestamp": _iso(at),
        "sentAt": _iso(at + dt.timedelta(milliseconds=40)),
        "receivedAt": _iso(at + dt.timedelta(milliseconds=90)),
        "timestamp": _iso(at),
        "version": 2,
        "channel": "client",
    }
    if user_id:
        payload["userId"] = user_id
    if kind == "track":
        payload["event"] = name or "Feature Used"
        payload["properties"] = properties or {}
    elif kind in ("page", "screen"):
        payload["name"] = name or "Dashboard"
        payload["properties"] = properties or {"path": "/app"}
    elif kind == "identify":
        payload["traits"] = traits or {}
    elif kind == "group":
        payload["groupId"] = group_id
        payload["traits"] = traits or {}
    elif kind == "alias":
        payload["previousId"] = anonymous_id or "anon-previous"
    if group_id and kind != "group":
        payload["context"]["groupId"] = group_id
    return payload


def workday(seed: int = 7, now: dt.datetime | None = None) -> list[dict]:
    """A realistic day of product events for two accounts and an unknown visitor."""
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC)
    users = {
        "u-alice": ("acme-ext-1", "alice@acme.test"),
        "u-bob": ("acme-ext-1", "Bob@Acme.test "),
        "u-carol": ("globex-ext-9", "carol@globex.test"),
    }
    out: list[dict] = []
    for user, (group, email) in users.items():
        start = now - dt.timedelta(hours=rng.randint(2, 20))
        out.append(event("identify", user_id=user, at=start, traits={"email": email, "plan": "pro"}))
        out.append(
            event(
                "group",
                user_id=user,
                at=start + dt.timedelta(seconds=1),
                group_id=group,
                traits={"name": group.split("-")[0].title(), "employees": rng.randint(10, 500)},
            )
        )
        for step in range(rng.randint(3, 8)):
            at = start + dt.timedelta(minutes=5 * (step + 1))
            kind = rng.choice(["track", "track", "track", "page", "screen"])
            name = rng.choice(["Report Created", "Dashboard Viewed", "Invite Sent", "Export Downloaded"])
            out.append(
                event(
                    kind,
                    user_id=user,
                    at=at,
                    name=name if kind == "track" else None,
                    properties={"plan": "pro", "seats": rng.randint(1, 50)},
                )
            )
    out.append(event("page", anonymous_id="anon-visitor-1", at=now - dt.timedelta(hours=1), name="Pricing"))
    out.append(event("alias", user_id="u-alice", anonymous_id="anon-visitor-1", at=now - dt.timedelta(minutes=30)))
    return out
