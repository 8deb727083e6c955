"""The receiver's gunicorn worker class: uvicorn's (uvloop, httptools), bounded as gunicorn bounds
its own workers: request heads checked as they arrive (414, 431), underscore headers dropped, a
half-closed client answered, a graceful shutdown within Segment's wait, at most
`worker_connections` connections (docs/receiver.md#worker-model).
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

MAX_REQUEST_LINE_BYTES = 8190
MAX_HEADER_BYTES = 16384  # one header line, name and value
MAX_HEADERS = 100
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing; the answer is `protocol.refusal`."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.refusal: tuple[int, str] | None = None
        self._in_head, self._head_bytes, self._headers, self._peer_closed = False, 0, 0, False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._headers = True, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_LINE_BYTES:
            self._refuse(414, f"request target longer than {MAX_REQUEST_LINE_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if b"_" in name:
            return
        self._headers += 1
        if len(name) + len(value) > MAX_HEADER_BYTES:
            self._refuse(431, f"a header line is longer than {MAX_HEADER_BYTES} bytes")
        if self._headers > MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and self.refusal is None and not self.transport.is_closing():
            self._head_bytes += len(data)  # a head still unfinished after this many bytes
            if self._head_bytes > MAX_HEAD_BYTES:
                self.refusal = (431, f"request head longer than {MAX_HEAD_BYTES} bytes")
                self.send_400_response("")

    def _refuse(self, status: int, message: str) -> None:
        self.refusal = (status, message)
        raise _HeadRefused(message)  # httptools stops; uvicorn answers through send_400_response

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            return super().send_400_response(msg)
        status, message = self.refusal
        body = (json.dumps({"error": message}, separators=(",", ":")) + "\n").encode()
        reason = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's, which uvicorn narrows to None
        """The client sent all it will send: answer a whole request first, then close."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            self._peer_closed = True
            return True  # keep the transport open for the answer
        return None  # nothing to answer (or a body cut short): close now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._peer_closed and not self.pipeline and not self.transport.is_closing():
            self.transport.close()


class ReceiverWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict] = {"loop": "uvloop", "http": BoundedHttpToolsProtocol}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # in-flight requests get as long as Segment waits for them (10 s), inside gunicorn's graceful timeout
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout - 5)
        self.config.limit_concurrency = self.cfg.worker_connections
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.setLevel(max(uvicorn_log.level, logging.WARNING))
