"""A connection and a running receiver for each archive kind: file:// and moto's S3 server."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import requests

from segment_elt.control import connections
from segment_elt.local import samples


@dataclass
class Hook:
    """A live connection behind a running receiver, with helpers that post as Segment does."""

    url: str
    connection_id: str
    org_id: str
    secret: str
    receiver: object

    def post(self, payload, *, secret: str | None = None, signed: bytes | None = None, headers: dict | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        sent = samples.headers(secret or self.secret, body if signed is None else signed)
        sent.update(headers or {})
        return requests.post(self.url, data=body, headers=sent, timeout=30)


@pytest.fixture(params=["file", "s3"])
def archive(request):
    """The archive URL of the test, file:// or s3:// (both are exercised)."""
    fixture = "archive_url" if request.param == "file" else "s3_archive_url"
    return request.getfixturevalue(fixture)


def make_hook(db, receiver, org="acme", rate_limit=None) -> Hook:
    created = connections.create(db, org, rate_limit=rate_limit)
    return Hook(receiver.webhook(created.connection_id), created.connection_id, org, created.secret, receiver)


@pytest.fixture
def hook(db, archive, receiver_factory) -> Hook:
    return make_hook(db, receiver_factory(), rate_limit=1_000_000)
