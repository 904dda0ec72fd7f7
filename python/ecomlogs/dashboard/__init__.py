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
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType
from typing import Any, Optional
from urllib.parse import urlsplit

from ecomlogs import settings as S
from ecomlogs.dashboard.collect import Collector
from ecomlogs.exceptions import ConfigError, ResourceError

log = logging.getLogger("ecomlogs.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "style.css": "text/css; charset=utf-8"}


def _static(name: str) -> bytes:
    return (resources.files("ecomlogs.dashboard") / "static" / name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    server_version = "ecomlogs-dashboard"

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        path = urlsplit(self.path).path
        if path == "/api/snapshot":
            body = json.dumps(self.server.collector.snapshot()).encode()
            self._send(200, "application/json", body)
        elif path in ("/", "/index.html"):
            self._send(200, _STATIC["index.html"], _static("index.html"))
        elif path.startswith("/static/") and path[len("/static/"):] in _STATIC:
            name = path[len("/static/"):]
            self._send(200, _STATIC[name], _static(name))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], collector: Collector) -> None:
        self.collector = collector
        super().__init__(address, _Handler)


class Dashboard:
    """The dashboard's server and its collector. ``port=0`` picks a free port (see :attr:`url`).
    :meth:`serve_forever` blocks; :meth:`start` runs it in a background thread; :meth:`close` stops."""

    def __init__(self, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, dsn: Optional[str] = None,
                 bootstrap_servers: Optional[str] = None, dlq_topic: str = S.DLQ_TOPIC,
                 metrics_urls: Optional[list[str]] = None, interval_s: float = 1.0,
                 extra_config: Optional[dict[str, str]] = None) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {port}")
        if not 0.1 <= interval_s <= 3600:
            raise ConfigError(f"interval must be between 0.1 and 3600 seconds, got {interval_s:g}")
        for url in metrics_urls or []:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"--metrics-url must be an http:// or https:// URL, got {url!r}")
        self.collector = Collector(dsn=S.dsn(dsn), bootstrap_servers=S.bootstrap_servers(bootstrap_servers),
                                   dlq_topic=dlq_topic, metrics_urls=metrics_urls, interval_s=interval_s,
                                   extra_config=extra_config)
        try:
            self.server = _Server((host, port), self.collector)
        except OSError as e:
            hint = " (choose another with --port)" if e.errno == errno.EADDRINUSE else ""
            raise ResourceError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}/"

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
def configure_parser(p: argparse.ArgumentParser) -> None:
    from ecomlogs import cli

    p.description = (
        "A live page of the pipeline on this machine: events/s and lag per stage, rows in the table, dead "
        "letters by reason, today's funnel and revenue per currency. Reads PostgreSQL, the topics and the "
        "stages' metrics endpoints (--metrics-url); never writes. Without metrics endpoints, rates and lag "
        "come from the topics' offsets and the table."
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s: this machine only)")
    p.add_argument("--port", type=cli._int, default=DEFAULT_PORT, help="port (default %(default)s; 0 = any free one)")
    cli._add_dsn(p)
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]", default=None,
                   help="Kafka bootstrap servers " + cli._env_help("KAFKA_BOOTSTRAP_SERVERS", S.DEFAULT_BOOTSTRAP_SERVERS))
    p.add_argument("--extra-config", metavar="KEY=VALUE", action="append", default=[],
                   help="a librdkafka setting passed as is (repeatable)")
    p.add_argument("--dlq-topic", default=S.DLQ_TOPIC, help="dead-letter topic (default %(default)s)")
    p.add_argument("--metrics-url", metavar="URL", action="append", default=[],
                   help="a stage's Prometheus endpoint, e.g. http://127.0.0.1:9101/metrics (repeatable; optional)")
    p.add_argument("--interval", type=cli._float, default=1.0, metavar="SECONDS",
                   help="how often the sources are read and the page updates (default %(default)s)")
    cli._add_verbosity(p)


def command(args: argparse.Namespace) -> int:
    dashboard = Dashboard(host=args.host, port=args.port, dsn=args.dsn, bootstrap_servers=args.bootstrap_servers,
                          dlq_topic=args.dlq_topic, metrics_urls=args.metrics_url, interval_s=args.interval,
                          extra_config=S.parse_extra_config(args.extra_config))
    print(f"dashboard on {dashboard.url} (database {S.redact(dashboard.collector.dsn)}, broker "
          f"{dashboard.collector.bootstrap_servers}); Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        dashboard.serve_forever()
    finally:
        dashboard.collector.stop()
        dashboard.server.server_close()
    return 0
