"""@segment/analytics-node 3.1.0 (installed from tests/clients/node's lock at test time), pointed at a
real receiver with its `host` option and batching on: every call type lands once and reaches the
marts; a wrong write key is refused and lands nothing. Without node or npm the tests are skipped,
unless SEGMENT_ELT_CI is set (.ci/run), where they fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import EVENT_NAMES, build_marts, staged

NODE_DIR = Path(__file__).parent / "node"
VERSION = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["@segment/analytics-node"]


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        missing = "node" if not node else "npm"
        if os.environ.get("SEGMENT_ELT_CI"):
            pytest.fail(f"{missing} is not installed: CI needs Node 20+ for the @segment/analytics-node tests")
        pytest.skip(f"{missing} is not installed: the @segment/analytics-node tests need Node 20+")
    installed = NODE_DIR / "node_modules" / "@segment" / "analytics-node" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != VERSION:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"npm ci failed: {done.stderr[-2000:]}"
    return node


def send(node: str, host: str, write_key: str) -> dict:
    done = subprocess.run(
        [node, "send.mjs"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOST": host, "WRITE_KEY": write_key},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_call_lands_once_in_one_batch_and_reaches_the_marts(node, sdk_connection, db):
    url, created = sdk_connection
    seen = send(node, url, created.write_key)
    assert seen == {"errors": [], "statuses": [200]}  # batching on: the six calls in one /v1/batch
    rows = staged(db, created.connection_id)
    assert len(rows) == 6 and {r["type"] for r in rows.values()} == {
        "identify",
        "track",
        "group",
        "page",
        "screen",
        "alias",
    }
    assert len({r["receivedAt"] for r in rows.values()}) == 1  # one request
    marts = build_marts(db, created.connection_id, "node-user", "node-group")
    assert marts["events"] == sorted(EVENT_NAMES) and marts["daily_events"] == 6
    assert marts["user_email"] == "node@example.com" and marts["account_traits"] == {"name": "Node Co"}


def test_a_wrong_write_key_is_refused_and_lands_nothing(node, sdk_connection, db):
    url, created = sdk_connection
    seen = send(node, url, "not-the-write-key")
    assert seen["statuses"] and set(seen["statuses"]) == {401}
    assert seen["errors"] and all("401" in error for error in seen["errors"])
    assert staged(db, created.connection_id) == {}
