"""Segment's webhook signature: lowercase hex HMAC-SHA1 of the raw body, keyed with the shared secret.

Segment's batching Webhooks (Actions) destination posts a JSON array but signs only its first
event (`JSON.stringify(events[0])`), so for an array the exact bytes of the first element are
accepted as the signed text too, and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import json

_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


def sign(secret: str, body: bytes) -> str:
    return hmac.digest(secret.encode(), body, hashlib.sha1).hex()


def first_element_bytes(body: bytes) -> bytes | None:
    """The exact bytes of the first element of a JSON array body, or None if it has none."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    start = len(text) - len(text.lstrip(_WS))
    if not text.startswith("[", start):
        return None
    first = start + 1
    while first < len(text) and text[first] in _WS:
        first += 1
    try:
        _, end = _DECODER.raw_decode(text, first)
    except (ValueError, RecursionError):
        return None
    return text[first:end].encode("utf-8")


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Constant-time check of X-Signature over the body, or over an array's first element."""
    if not signature:
        return False
    given = signature.strip().lower().encode("ascii", "replace")
    if hmac.compare_digest(sign(secret, body).encode(), given):
        return True
    first = first_element_bytes(body)
    return first is not None and hmac.compare_digest(sign(secret, first).encode(), given)
