"""A stand-in S3 endpoint that answers every PUT (and DELETE) after a fixed delay (a realistic
in-region PUT takes ~40 ms) and counts them, keeping objects in memory; optionally every read
(GET, and LIST by pages of 1,000 keys as S3 pages them) after a delay of its own. It speaks just
enough S3 for the archive (put_object, get_object, head_object, head_bucket, list_objects_v2
with Size and ETag, delete_object, delete_objects): it measures and provokes
what waiting on S3 does to a receiver or to retention, where moto's server would be the
bottleneck itself.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse
from xml.etree import ElementTree
from xml.sax.saxutils import escape


class SlowS3(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, port: int, put_delay_s: float, read_delay_s: float = 0.0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.put_delay_s, self.puts = put_delay_s, 0
        self.read_delay_s, self.reads = read_delay_s, 0
        self.objects: dict[str, bytes] = {}  # "bucket/key" -> body
        self.etags: dict[str, str] = {}  # "bucket/key" -> MD5 hex, as S3 answers a single-part PUT
        self._names: list[str] = []  # the objects' names, sorted: a LIST page costs what S3's does, not a sort
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> SlowS3:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stored(self, name: str, body: bytes) -> str:
        """Keep the object; returns its ETag."""
        etag = hashlib.md5(body).hexdigest()
        with self._lock:
            self.puts += 1
            if name not in self.objects:
                bisect.insort(self._names, name)
            self.objects[name], self.etags[name] = body, etag
        return etag

    def removed(self, name: str) -> None:
        with self._lock:
            self.etags.pop(name, None)
            if self.objects.pop(name, None) is not None:
                del self._names[bisect.bisect_left(self._names, name)]

    def page(self, prefix: str, after: str, size: int) -> tuple[list[str], bool]:
        """Up to `size` names starting with `prefix` and sorting after `after`, and whether more follow."""
        with self._lock:
            start = max(bisect.bisect_left(self._names, prefix), bisect.bisect_right(self._names, after))
            found = []
            for name in self._names[start : start + size + 1]:
                if not name.startswith(prefix):
                    break
                found.append(name)
        return found[:size], len(found) > size

    def read(self) -> None:
        time.sleep(self.read_delay_s)
        with self._lock:
            self.reads += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _name(self) -> tuple[str, str]:
        path = unquote(urlparse(self.path).path).lstrip("/")
        bucket, _, key = path.partition("/")
        return bucket, key

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.server.put_delay_s)
        bucket, key = self._name()
        self._answer(200, headers={"ETag": f'"{self.server.stored(f"{bucket}/{key}", body)}"'})

    def do_HEAD(self):
        bucket, key = self._name()
        found = not key or f"{bucket}/{key}" in self.server.objects
        self._answer(200 if found else 404)

    def do_POST(self):
        """DeleteObjects (POST /bucket?delete): the keys of its XML body, after one write's delay."""
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.server.put_delay_s)
        bucket, _ = self._name()
        for element in ElementTree.fromstring(body).iter():
            if element.tag.rsplit("}", 1)[-1] == "Key" and element.text:
                self.server.removed(f"{bucket}/{element.text}")
        self._answer(200, b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>')

    def do_DELETE(self):
        time.sleep(self.server.put_delay_s)
        bucket, key = self._name()
        self.server.removed(f"{bucket}/{key}")
        self._answer(204)

    def do_GET(self):
        if self.path == "/_puts":  # the counts, for a stand-in running in its own process
            return self._answer(200, str(self.server.puts).encode())
        if self.path == "/_reads":
            return self._answer(200, str(self.server.reads).encode())
        self.server.read()
        bucket, key = self._name()
        if key:
            body = self.server.objects.get(f"{bucket}/{key}")
            return (
                self._answer(200, body)
                if body is not None
                else self._answer(404, b"<Error><Code>NoSuchKey</Code></Error>")
            )
        query = parse_qs(urlparse(self.path).query)
        prefix = query.get("prefix", [""])[0]
        after = query.get("continuation-token", query.get("start-after", [""]))[0]
        page_size = min(1000, int(query.get("max-keys", ["1000"])[0]))
        names, truncated = self.server.page(f"{bucket}/{prefix}", f"{bucket}/{after}", page_size)
        page = [name.split("/", 1)[1] for name in names]
        found = [
            (k, self.server.objects.get(f"{bucket}/{k}", b""), self.server.etags.get(f"{bucket}/{k}", "")) for k in page
        ]
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{len(body)}</Size><ETag>&quot;{etag}&quot;</ETag></Contents>"
            for k, body, etag in found
        )
        more = f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>" if truncated else ""
        self._answer(
            200,
            (
                f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{bucket}</Name>'
                f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated><KeyCount>{len(page)}</KeyCount>"
                f"{contents}{more}</ListBucketResult>"
            ).encode(),
            {"Content-Type": "application/xml"},
        )


class SlowS3Process:
    """The stand-in in its own process (`python -m tests.s3_stand_in PORT DELAY_S`), so that a
    benchmark's client threads do not share its interpreter."""

    def __init__(self, port: int, put_delay_s: float, read_delay_s: float = 0.0):
        import subprocess
        import sys

        from tests.helpers import ROOT, wait_http

        self.endpoint = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "tests.s3_stand_in", str(port), str(put_delay_s), str(read_delay_s)]
        self.proc = subprocess.Popen(args, cwd=ROOT)
        wait_http(self.endpoint + "/_puts", proc=self.proc)

    @property
    def puts(self) -> int:
        import requests

        return int(requests.get(self.endpoint + "/_puts", timeout=5).text)

    @property
    def reads(self) -> int:
        """GETs and LIST pages answered."""
        import requests

        return int(requests.get(self.endpoint + "/_reads", timeout=5).text)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


if __name__ == "__main__":
    import sys

    SlowS3(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0).serve_forever()
