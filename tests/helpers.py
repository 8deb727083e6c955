"""Real processes for the tests: the receiver under gunicorn, and moto's S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from segment_elt.local.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def wait_http(url: str, timeout_s: float = 30, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@dataclass
class Receiver:
    """The receiver under a real gunicorn; `url` is its base, `log` its stderr file."""

    url: str
    proc: subprocess.Popen
    log: Path
    env: dict = field(repr=False, default_factory=dict)

    def webhook(self, connection_id: str) -> str:
        return f"{self.url}/webhooks/segment/{connection_id}"

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_receiver(env: dict, log_dir: Path, workers: int = 2) -> Receiver:
    """The receiver with its production settings (RECEIVER_* in env override them)."""
    port = free_port()
    full_env = {**os.environ, "RECEIVER_WORKERS": str(workers), **env, "RECEIVER_BIND": f"127.0.0.1:{port}"}
    log = log_dir / f"receiver-{port}.log"
    proc = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / "receiver" / "gunicorn.conf.py")],
        cwd=ROOT,
        env=full_env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    return Receiver(url, proc, log, full_env)


@dataclass
class MotoS3:
    """moto's S3-compatible server in its own process, so a test can stop and start it."""

    port: int
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.endpoint, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): requests hang until they time out, state is kept."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


@dataclass
class LoadBalancer:
    """Debian's haproxy in front of receivers, as a deployment runs replicas; `url` is its base."""

    url: str
    proc: subprocess.Popen

    def webhook(self, connection_id: str) -> str:
        return f"{self.url}/webhooks/segment/{connection_id}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_haproxy(receivers: list[Receiver], log_dir: Path) -> LoadBalancer:
    """haproxy balancing round robin over `receivers`, checking each one's /readyz every 0.5 s.
    It retries a request on another replica only when it could not connect (nothing was sent),
    so a POST is never sent twice by the balancer itself."""
    port = free_port()
    servers = "\n".join(
        f"    server replica-{i} {r.url.removeprefix('http://')} check inter 500ms fall 2 rise 2"
        for i, r in enumerate(receivers, 1)
    )
    config = log_dir / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 15s
    timeout server 15s
    retries 2
    option redispatch
frontend webhooks
    bind 127.0.0.1:{port}
    default_backend receivers
backend receivers
    balance roundrobin
    option httpchk GET /readyz
{servers}
"""
    )
    proc = subprocess.Popen(
        ["haproxy", "-f", str(config), "-db"], stdout=(log_dir / "haproxy.log").open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    return LoadBalancer(url, proc)
