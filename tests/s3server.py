"""A real S3-compatible server on loopback for the object-storage tests: moto's server mode,
behind a small HTTP proxy of ours that counts the requests it forwards (what the server was
asked for, by method and key) and, when a test says so, answers one the way a store in trouble
does (a 503 SlowDown, a 403 AccessDenied, a dropped connection) or stops the server mid-write.

Every request travels over TCP: botocore signs it, the proxy forwards the bytes, moto stores
them. Nothing is mocked inside the client.
"""

from __future__ import annotations

import http.client
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

#: what the tests sign with; the credential tests look for it everywhere a run leaves a trace
ACCESS_KEY = "AKIATOWERKITTEST0001"
SECRET_KEY = "towerkit-test-secret-Xq7vPz93LmR2"


@dataclass
class Rule:
    """Answer requests of ``method`` whose key matches ``key`` (a regex) with ``status`` and the
    S3 error ``code`` (``status`` None: drop the connection; ``action``: call it first), at most
    ``times`` times (None: always)."""

    method: str
    key: str
    status: int | None = None
    code: str = ""
    times: int | None = None
    action: Callable[[], None] | None = None
    used: int = 0


@dataclass
class Seen:
    method: str
    bucket: str
    key: str
    query: str


@dataclass
class S3Server:
    """moto's server and the proxy in front of it; point ``AWS_ENDPOINT_URL`` at ``url``."""

    moto: object
    proxy: ThreadingHTTPServer
    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.proxy.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """The environment a client of this server runs with (the standard chain's variables;
        at most 2 attempts per request, so failures come fast)."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "2",
            "AWS_RETRY_MODE": "standard",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def gets(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys of the object GETs (not listings) the server was asked for, in order."""
        with self.lock:
            return [
                s.key
                for s in self.seen
                if s.method == "GET" and s.bucket == bucket and s.key and s.key.startswith(prefix)
            ]

    def count(self, method: str, key: str) -> int:
        """Requests of ``method`` whose key matches ``key`` (a regex)."""
        with self.lock:
            return sum(1 for s in self.seen if s.method == method and re.search(key, s.key))

    def forget(self) -> None:
        with self.lock:
            self.seen.clear()

    def stop(self) -> None:
        self.proxy.shutdown()
        self.proxy.server_close()
        self.moto.stop()

    def _rule(self, method: str, key: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.method == method and re.search(rule.key, key):
                    if rule.times is not None and rule.used >= rule.times:
                        continue
                    rule.used += 1
                    return rule
        return None


def _error_body(code: str, key: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{code} (from the test proxy)</Message><Key>{key}</Key></Error>"
    ).encode()


def _handler(server: S3Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _forward(self) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path).lstrip("/")
            bucket, _, key = path.partition("/")
            body = self._body()
            with server.lock:
                server.seen.append(Seen(self.command, bucket, key, parts.query))
            rule = server._rule(self.command, key)
            if rule is not None:
                if rule.action is not None:
                    rule.action()
                if rule.status is None:  # a dropped connection
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload = _error_body(rule.code, key)
                self.send_response(rule.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
            headers["Content-Length"] = str(len(body))
            try:
                upstream = http.client.HTTPConnection(*server.upstream, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
            except OSError:  # the server behind is gone: as a store that went away
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a client that hung up (a batch
        pass  # cancelled after one failure): nothing for the test's output


def start() -> S3Server:
    """moto's server on a free loopback port, and the proxy in front of it on another."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    upstream = moto.get_host_and_port()
    server = S3Server(moto, None, upstream)  # type: ignore[arg-type]
    proxy = _Quiet(("127.0.0.1", 0), _handler(server))
    proxy.daemon_threads = True
    server.proxy = proxy
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return server


def clear_clients() -> None:
    """Forget fsspec's cached S3 filesystems (they keep the endpoint they were made with)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
