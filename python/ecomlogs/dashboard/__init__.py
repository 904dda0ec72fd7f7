"""``ecomlogs dashboard``: a local web page that follows the pipeline live (events/s and lag per stage,
rows in the table, dead letters by reason, today's funnel and revenue per currency). It reads PostgreSQL,
the topics and, where given, the stages' Prometheus endpoints; it never writes. The page is plain HTML,
CSS and JavaScript shipped in the package (charts are SVG drawn by the page): no internet, no CDN.

    from ecomlogs.dashboard import Dashboard
    with Dashboard(port=0) as d:
        print(d.url)
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit

from ecomlogs import _core, flags
from ecomlogs import settings as S
from ecomlogs.dashboard.collect import Collector
from ecomlogs.exceptions import ConfigError, ResourceError

log = logging.getLogger("ecomlogs.dashboard")

_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "style.css": "text/css; charset=utf-8"}


def _static(name: str) -> bytes:
    return (resources.files("ecomlogs.dashboard") / "static" / name).read_bytes()


# ---------------------------------------------------------------------------------------------- checks
def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def host_of(header: Optional[str]) -> Optional[str]:
    """The host name of a Host header (lower case, without port or brackets); None when malformed."""
    if not header:
        return None
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        rest = h[end + 1:] if end > 0 else "?"
        return h[1:end] if rest == "" or (rest.startswith(":") and rest[1:].isdigit()) else None
    name, sep, port = h.partition(":")
    if sep and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _listen_address(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(address family, socket address) for ``--host``: one readable line when it does not resolve."""
    if not host.strip():
        raise ConfigError("--host cannot be empty (127.0.0.1 is this machine only; 0.0.0.0 every interface)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) and e.strerror else str(e)
        raise ConfigError(f"--host {host!r} is not an address of this machine ({reason})") from None
    # IPv4 first where a name has both (localhost), as before IPv6 listening was possible.
    family, _type, _proto, _name, address = min(infos, key=lambda i: i[0] != socket.AF_INET)
    return family, address


# ---------------------------------------------------------------------------------------------- server
class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    server_version = "ecomlogs-dashboard"
    timeout = 30  # a client that opens a connection and sends nothing does not hold a thread forever

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        if not self._host_allowed():
            return
        path = urlsplit(self.path).path
        if path == "/api/snapshot":
            # Never NaN or Infinity (not JSON: the page could not parse it): the collector makes them null.
            body = json.dumps(self.server.collector.snapshot(), allow_nan=False).encode()
            self._send(200, "application/json", body)
        elif path in ("/", "/index.html"):
            self._send(200, _STATIC["index.html"], _static("index.html"))
        elif path.startswith("/static/") and path[len("/static/"):] in _STATIC:
            name = path[len("/static/"):]
            self._send(200, _STATIC[name], _static(name))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _host_allowed(self) -> bool:
        """Refuses a request whose Host header is not a name of this server: a page from elsewhere in
        the same browser could otherwise read the snapshot through DNS rebinding (its own name made to
        resolve to 127.0.0.1). IP addresses are always fine (no DNS involved), as are localhost, the
        --host name and the --allow-host names."""
        header = self.headers.get("Host")
        name = host_of(header)
        if name is not None and self.server.allows(name):
            return True
        self.server.refused(name or header or "")
        text = (f"Host {header!r} is not allowed: open this page as http://127.0.0.1:{self.server.port}/, "
                f"or start the dashboard with --allow-host NAME\n") if header else "a Host header is required\n"
        self._send(403 if header else 400, "text/plain; charset=utf-8", text.encode())
        return False

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog (socketserver's default is 5)

    def __init__(self, family: int, address: tuple[Any, ...], collector: Collector,
                 allowed_hosts: Iterable[str]) -> None:
        self.address_family = family
        self.collector = collector
        self.allowed_hosts = frozenset(allowed_hosts)
        self._refused: set[str] = set()
        self._refused_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def allows(self, name: str) -> bool:
        return name == "localhost" or name.endswith(".localhost") or name in self.allowed_hosts or _ip(name)

    def refused(self, name: str) -> None:
        """One warning per refused name (a page that keeps polling is not a log line a second)."""
        with self._refused_lock:
            if name in self._refused or len(self._refused) >= 100:
                return
            self._refused.add(name)
        log.warning("refused requests for Host %r (not a name of this dashboard; --allow-host adds one)", name)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line per failed request, never a traceback: a client that went away early (a closed
        tab, a cancelled poll) is routine, at debug level; anything else is a warning."""
        e = sys.exc_info()[1]
        who = client_address[0] if isinstance(client_address, tuple) and client_address else client_address
        if isinstance(e, (ConnectionError, TimeoutError)):
            log.debug("%s closed the connection early (%s)", who, e)
        else:
            log.warning("a request from %s failed: %s: %s", who, type(e).__name__, e)


class Dashboard:
    """The dashboard's server and its collector. ``port=0`` picks a free port (see :attr:`url`).
    :meth:`serve_forever` blocks; :meth:`start` runs it in a background thread; :meth:`close` stops.

    Every argument is checked here, before anything is connected to: a bad one is a :class:`ConfigError`
    (a port, an interval, a URL, a topic name, a librdkafka key). The page answers only requests for
    its own names (``localhost``, an IP address, ``host``, ``allow_hosts``)."""

    def __init__(self, *, host: Optional[str] = None, port: Optional[int] = None, dsn: Optional[str] = None,
                 bootstrap_servers: Optional[str] = None, dlq_topic: Optional[str] = None,
                 metrics_urls: Optional[list[str]] = None, interval_s: Optional[float] = None,
                 extra_config: Optional[dict[str, str]] = None,
                 allow_hosts: Optional[list[str]] = None) -> None:
        given = dict(host=host, port=port, dsn=dsn, bootstrap_servers=bootstrap_servers, dlq_topic=dlq_topic,
                     metrics_urls=metrics_urls, interval_s=interval_s, extra_config=extra_config,
                     allow_hosts=allow_hosts)
        o = _core.resolve_options("dashboard", {k: v for k, v in given.items() if v is not None})
        host, port = o["host"], o["port"]
        allowed = {h.strip().lower().strip("[]").rstrip(".") for h in o["allow_hosts"] or []}
        family, address = _listen_address(host, port)
        allowed.add(host.strip().lower().strip("[]").rstrip("."))
        self.collector = Collector(dsn=o["dsn"], bootstrap_servers=o["bootstrap_servers"],
                                   dlq_topic=o["dlq_topic"], metrics_urls=o["metrics_urls"] or [],
                                   interval_s=o["interval_s"], extra_config=o["extra_config"])
        try:
            self.server = _Server(family, address, self.collector, allowed)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"--host {host!r} is not an address of this machine ({e.strerror})") from None
            hint = " (choose another with --port)" if e.errno == errno.EADDRINUSE else ""
            raise ResourceError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        host = host if isinstance(host, str) else host.decode()
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        self.collector.start()
        self.server.serve_forever(poll_interval=0.2)

    def start(self) -> "Dashboard":
        self._thread = threading.Thread(target=self.serve_forever, name="dashboard-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.collector.stop()
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=10)
        self.server.server_close()

    def __enter__(self) -> "Dashboard":
        return self.start()

    def __exit__(self, et: Optional[type[BaseException]], ev: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- command
DESCRIPTION = (
    "A live page of the pipeline on this machine: events/s and lag per stage, rows in the table, dead letters "
    "by reason, today's funnel and revenue per currency. Reads PostgreSQL, the topics and the stages' metrics "
    "endpoints (--metrics-url); never writes. Without metrics endpoints, rates and lag come from the topics' "
    "offsets and the table. It answers only requests for its own names (localhost, IP addresses, --host, "
    "--allow-host), so that no other web page can read it."
)


def command(args: argparse.Namespace) -> int:
    """``ecomlogs dashboard``: serves until Ctrl-C."""
    dashboard = Dashboard(**flags.given(args, "dashboard"))
    flags.report(f"dashboard on {dashboard.url} (database {S.redact(dashboard.collector.dsn)}, broker "
                 f"{dashboard.collector.bootstrap_servers}); Ctrl-C to stop")
    try:
        dashboard.serve_forever()
    finally:
        dashboard.collector.stop()
        dashboard.server.server_close()
    return 0
