"""The daemon's one small HTTP server (the metrics, the web page), on a thread of its own.

The standard library's threading server: nothing to install, enough for a scrape every few
seconds and one person's browser. GET and POST only; a POST body is read only when its
Content-Length says it is at most 64 KiB (otherwise 413, 400 or 411, and the connection is
closed unread), then parsed as a form. A handler's exception is logged and answered 500.
Every response carries the security headers its handler gives.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from .config import Address

MAX_FORM = 64 * 1024
CLOSE = {"Connection": "close"}


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # names lower-cased
    form: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    ctype: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def not_found() -> Response:
    return Response(404, b"not found\n")


def _unreadable(length: str | None, encoding: str | None) -> Response | None:
    """Why a POST body will not be read (None: it will, all of it within MAX_FORM): a body of
    unknown or negative length, or larger than a form can be, is refused before a byte of it
    is buffered, authenticated or not."""
    if encoding is not None and encoding.strip().lower() != "identity":
        return Response(411, b"a body needs a Content-Length (no chunked uploads)\n", headers=CLOSE)
    try:
        size = int(length) if length is not None else 0
    except ValueError:
        size = -1
    if size < 0:
        return Response(400, b"bad Content-Length\n", headers=CLOSE)
    if size > MAX_FORM:
        return Response(413, f"request body over {MAX_FORM} bytes\n".encode(), headers=CLOSE)
    return None


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Server:
    """Serves ``handler`` at ``address`` (port 0: any free one; ``address`` then says which)."""

    def __init__(self, address: Address, handler: Handler):
        outer = self

        class Handler_(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer({})

            def do_POST(self) -> None:
                refused = _unreadable(self.headers.get("Content-Length"), self.headers.get("Transfer-Encoding"))
                if refused is not None:
                    self.close_connection = True  # the body is never read: nothing of it is buffered
                    self._send(refused)
                    return
                raw = self.rfile.read(int(self.headers["Content-Length"] or 0)).decode("utf-8", "replace")
                self._answer({k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()})

            def _answer(self, form: dict[str, str]) -> None:
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, form)
                try:
                    response = outer.handler(request)
                except Exception as exc:  # one bad request must not end the server
                    outer.log.exception("http_request_failed", path=request.path, error=str(exc))
                    response = Response(500, f"internal error: {type(exc).__name__}\n".encode())
                self._send(response)

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.ctype)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, *args: Any) -> None:
                pass  # a scrape every 15 s, a page's thumbnails: not news

        self.handler = handler  # replaced in place by a reload that keeps the address
        self.log = structlog.get_logger("smolvlm_watch.http")
        self.httpd = (_V6Server if ":" in address.host else http.server.ThreadingHTTPServer)(
            (address.host, address.port), Handler_)
        self.httpd.daemon_threads = True
        self.address = Address(address.host, self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ListenError(Exception):
    """An address a listener cannot take (a port in use, an address not on this machine): the
    user's to change, not a crash, and not an invalid config either."""


def bound(address: Address, handler: Handler, key: str, source: str | None) -> Server:
    """A Server on ``address`` (not started yet), or a ListenError naming ``key``, the setting
    that asked for it, and the fix."""
    try:
        return Server(address, handler)
    except OSError as exc:
        where = f"{key} in {source}" if source else key
        raise ListenError(f"cannot listen on {address} ({where}): {exc.strerror or exc}; stop what uses it, or set "
                          f"{key} to another address") from None


def routed(routes: dict[str, Handler], fallback: Handler | None = None) -> Handler:
    """One handler from exact paths, then ``fallback`` (else 404)."""

    def handle(request: Request) -> Response:
        route = routes.get(request.path)
        if route is not None:
            return route(request)
        return fallback(request) if fallback else not_found()

    return handle
