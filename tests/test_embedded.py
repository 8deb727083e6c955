"""The embedded PostgreSQL coexists with other servers: a saved port another process holds is left
for a free one, said in one line, and a server that cannot start says why in one line."""

from __future__ import annotations

import socket
import subprocess
import sys

import psycopg
import pytest

from segment_elt.local import embedded


@pytest.fixture
def base(tmp_path):
    yield tmp_path / "pg"
    embedded.stop(tmp_path / "pg", "immediate")


def test_a_saved_port_another_process_holds_is_left_for_a_free_one(base, capsys):
    embedded.start(base, server_port=embedded.free_port())
    embedded.stop(base)
    saved = embedded.port(base)
    with socket.socket() as squatter:  # e.g. the test suite's server took it meanwhile
        squatter.bind(("127.0.0.1", saved))
        squatter.listen()
        url = embedded.start(base)
    moved = embedded.port(base)
    assert moved != saved and url == embedded.url(base)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"embedded PostgreSQL: port {saved} is taken by another process; starting on {moved} instead"
    ]
    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_a_server_that_cannot_start_says_why_in_one_line(base):
    embedded.start(base, server_port=embedded.free_port())
    embedded.stop(base)
    (base / "data" / "postgresql.auto.conf").write_text("shared_buffers = 'a lot'\n")
    done = subprocess.run(
        [sys.executable, "-m", "segment_elt.local.embedded", "start", str(base)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not start" in lines[0] and "shared_buffers" in lines[0], done.stderr


def test_a_restart_with_clients_connected_keeps_its_port(base, capsys):
    """A stop closes its clients' connections from the server's side; until each client notices,
    the server's half lingers on the port (FIN-WAIT-2). That does not hold the port: PostgreSQL
    binds with SO_REUSEADDR, so a restart keeps the URL every running process holds."""
    url = embedded.start(base, server_port=embedded.free_port())
    saved = embedded.port(base)
    clients = [psycopg.connect(url) for _ in range(3)]
    try:
        embedded.stop(base)
        assert embedded.start(base) == url
        assert embedded.port(base) == saved
        assert capsys.readouterr().err == ""
        with psycopg.connect(url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        for client in clients:
            client.close()
