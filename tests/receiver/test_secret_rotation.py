"""Secret rotation without a refused request, and Fernet key rotation, through the CLI and a real
receiver (gunicorn, several worker processes, each with its own cache of secrets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet

from segment_elt.ingest.receiver.backends import SECRETS_TTL_S
from segment_elt.local import samples
from tests.receiver.conftest import make_hook

CLI = str(Path(sys.executable).parent / "segment-elt")


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def rotate(connection_id: str, *extra: str) -> dict:
    done = cli("connections", "rotate-secret", connection_id, "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def answers(hook, secret: str, times: int = 6) -> set[int]:
    """Statuses of `times` posts signed with `secret` (spread over the workers by the kernel)."""
    return {
        hook.post(samples.event("track", user_id="u1", name="Report Created"), secret=secret).status_code
        for _ in range(times)
    }


def test_both_secrets_verify_until_the_rotation_finishes(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=2))
    old = hook.secret
    assert answers(hook, old) == {200}  # every worker has cached the old secret
    rotated = rotate(hook.connection_id)
    new = rotated["secret"]
    assert new != old and rotated["previous_until"]
    assert answers(hook, new) == {200}  # at once, though the workers cached only the old one
    assert answers(hook, old) == {200}  # Segment may still sign with the old one during the grace
    again = cli("connections", "rotate-secret", hook.connection_id)
    assert again.returncode == 1 and again.stderr.startswith(f"error: {hook.connection_id} is already rotating")
    rotate(hook.connection_id, "--finish")
    deadline = time.monotonic() + SECRETS_TTL_S + 5  # each worker re-reads within its cache's lifetime
    while answers(hook, old, 2) != {401}:
        assert time.monotonic() < deadline, "the finished rotation's old secret still verifies"
        time.sleep(0.5)
    assert answers(hook, new) == {200}


def test_the_grace_period_ends_by_itself(db, archive_url, receiver_factory):
    hook = make_hook(db, receiver_factory(workers=1))
    new = rotate(hook.connection_id, "--grace-hours", "1")["secret"]
    db.execute(
        "update control.connections set previous_secret_until = now() - interval '1 second' where connection_id = %s",
        (hook.connection_id,),
    )  # the hour has passed
    assert answers(hook, hook.secret, 2) == {401}  # a mismatch re-reads: the expired secret is gone
    assert answers(hook, new, 2) == {200}


def test_a_fernet_key_rotation_keeps_every_secret_readable_and_readyz_says_when_not(
    db, archive_url, receiver_factory, monkeypatch
):
    first = os.environ["SEGMENT_ELT_FERNET_KEY"]
    hook = make_hook(db, receiver_factory(workers=1))
    assert cli("connections", "outbound", hook.connection_id, "--write-key", "wk-1").returncode == 0
    second = Fernet.generate_key().decode()
    both = {"SEGMENT_ELT_FERNET_KEY": f"{second},{first}"}
    done = cli("keys", "reencrypt", env=both)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("re-encrypted 3 stored secrets")  # secret, write key, outbound write key
    # now only the new key is needed: a receiver with it alone verifies and is ready
    only_new = receiver_factory(workers=1, env={"SEGMENT_ELT_FERNET_KEY": second})
    assert requests.get(only_new.url + "/readyz", timeout=10).status_code == 200
    signed = samples.event("track", user_id="u1", name="Report Created")
    body = json.dumps(signed).encode()
    answer = requests.post(
        only_new.webhook(hook.connection_id), data=body, headers=samples.headers(hook.secret, body), timeout=10
    )
    assert answer.status_code == 200, answer.text
    # the old key alone reads nothing any more: /readyz names what it cannot read
    stale = requests.get(hook.receiver.url + "/readyz", timeout=10)
    assert stale.status_code == 503
    assert stale.json()["secrets"].startswith("a stored secret cannot be decrypted: no key in SEGMENT_ELT_FERNET_KEY")
    assert f"control.connections.secret_enc of {hook.connection_id}" in stale.json()["secrets"]
    # and reencrypt with a key that reads nothing refuses, writing nothing
    refused = cli("keys", "reencrypt", env={"SEGMENT_ELT_FERNET_KEY": Fernet.generate_key().decode()})
    assert refused.returncode == 1 and "nothing rewritten" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("keys", "reencrypt", env={"SEGMENT_ELT_FERNET_KEY": second}).returncode == 0


def test_a_malformed_second_key_is_one_line(database_url):
    done = cli("keys", "reencrypt", env={"SEGMENT_ELT_FERNET_KEY": f"{Fernet.generate_key().decode()},nope"})
    assert done.returncode == 1 and done.stderr.startswith("error: key 2 of 2 in SEGMENT_ELT_FERNET_KEY is not a valid")
    assert "Traceback" not in done.stderr
