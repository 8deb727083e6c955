"""`make up` prints Airflow's admin password once the API server has written it."""

from __future__ import annotations

import json
import threading
import time

import pytest

from segment_elt.local.up import admin_password


def test_waits_for_the_password_file_and_returns_the_password(tmp_path):
    path = tmp_path / "simple_auth_manager_passwords.json"

    def api_server_writes() -> None:
        time.sleep(0.5)
        path.write_text("")  # created, not yet written
        time.sleep(0.5)
        path.write_text(json.dumps({"admin": "s3cret"}))

    writer = threading.Thread(target=api_server_writes)
    writer.start()
    try:
        assert admin_password(path, lambda: True, timeout_s=30) == "s3cret"
    finally:
        writer.join()


@pytest.mark.timeout(60)
def test_an_api_server_that_exits_first_gives_no_password(tmp_path):
    path = tmp_path / "simple_auth_manager_passwords.json"
    assert admin_password(path, lambda: False, timeout_s=3600) is None
