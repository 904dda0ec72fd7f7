"""`ecomlogs dashboard` in a real browser (Debian's Chromium, headless, driven by Playwright) against the real
broker and PostgreSQL while a pipeline runs: the page's numbers change as rows arrive and match the database
and the topics; a missing database is shown on the page while the server keeps retrying. Also: bad input is
one line and exit 2 before anything is connected to; only the dashboard's own host names are answered (DNS
rebinding); NaN and infinities from a metrics endpoint still make a JSON snapshot and a page; a client that
goes away early is one log line at most."""

from __future__ import annotations

import http.client
import json
import math
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import psycopg2
import pytest

import ecomlogs
from helpers import finish, read_all, start, unique, wait_for

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
# As root, in a sandbox without internet: no sandboxing, no GPU, and none of Chromium's own connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dashboard(dsn: str, bootstrap: str, port: int, *extra: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ecomlogs", "dashboard", "--port", str(port), "--dsn", dsn,
                             "--bootstrap-servers", bootstrap, "--interval", "0.5", *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, text=True)

    def answers() -> bool:
        assert proc.poll() is None, f"the dashboard exited: {(proc.communicate()[1] or '')[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for("the dashboard to answer", answers, timeout_s=30, every_s=0.2)
    except BaseException:
        finish(proc, sig=2, timeout=30)
        raise
    return proc


@pytest.fixture()
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: ./dev test installs Debian's chromium package"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def value(page: Any, selector: str) -> str:
    return str(page.get_attribute(selector, "data-value", timeout=5000) or "")


def number(page: Any, selector: str) -> int:
    text = value(page, selector)
    return int(text) if text.lstrip("-").isdigit() else -1


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as c:
        c.execute(sql)
        return c.fetchall()


@pytest.mark.timeout(600)
def test_dashboard_follows_a_running_pipeline(browser: Any, memory_broker: Any, db: str) -> None:
    bootstrap, port = memory_broker.bootstrap_servers, free_port()
    url = f"http://127.0.0.1:{port}/"
    dash = dashboard(db, bootstrap, port)
    pipeline = start([sys.executable, "-m", "ecomlogs", "run", "--count", "30000", "--rate", "1500", "--seed", "5",
                      "--bootstrap-servers", bootstrap, "--dsn", db, "-q"])
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)

        # Rows arrive and the page follows them, never ahead of the database.
        first = wait_for("rows on the page", lambda: max(number(page, '[data-k="rows"]'), 0), timeout_s=120)
        wait_for("the row count on the page to change", lambda: number(page, '[data-k="rows"]') > first,
                 timeout_s=60)
        shown = number(page, '[data-k="rows"]')
        assert shown <= query(db, "SELECT count(*) FROM kafka_events_silver")[0][0]
        wait_for("rates on the page", lambda: float(value(page, '[data-k="loader_rate"]') or 0) > 0
                 and float(value(page, '[data-k="producer_rate"]') or 0) > 0, timeout_s=30)
        page.wait_for_selector('#revenue tbody tr[data-currency]', timeout=30_000)
        # A few seconds into the run, so that the chart has a history to show.
        wait_for("8,000 rows", lambda: number(page, '[data-k="rows"]') >= 8000, timeout_s=120)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        code, err = finish(pipeline, timeout=300)
        assert code == 0, err[-3000:]

        # Once the pipeline is done, every number on the page is the database's and the topics'.
        (rows,) = query(db, "SELECT count(*) FROM kafka_events_silver")[0]
        wait_for("the page to show the final row count",
                 lambda: number(page, '[data-k="rows"]') == rows, timeout_s=30)
        assert page.inner_text('[data-k="rows"]') == f"{rows:,}"
        wait_for("no lag left", lambda: number(page, '[data-k="processor_lag"]') == 0
                 and number(page, '[data-k="loader_lag"]') == 0, timeout_s=30)
        assert number(page, '[data-k="produced"]') == 30_000
        funnel = query(db, "SELECT page_views, add_to_carts, purchases FROM daily_funnel "
                           "WHERE day = (now() AT TIME ZONE 'UTC')::date")[0]
        assert [number(page, f'#funnel [data-step="{s}"]') for s in ("page_views", "add_to_carts", "purchases")] \
            == list(funnel)
        revenue = query(db, "SELECT currency, purchases, revenue FROM daily_revenue "
                            "WHERE day = (now() AT TIME ZONE 'UTC')::date ORDER BY currency")
        assert revenue
        for currency, purchases, amount in revenue:
            row = f'#revenue tr[data-currency="{currency}"]'
            assert number(page, f'{row} [data-col="purchases"]') == purchases
            assert Decimal(value(page, f'{row} [data-col="revenue"]')) == amount
        dead = read_all(bootstrap, "dead_letter_events", timeout_s=60)
        reasons = Counter(dict(m.headers())["reason"].decode() for m in dead)
        wait_for("the dead letters on the page",
                 lambda: number(page, '[data-k="dead_letters"]') == len(dead), timeout_s=30)
        assert {r: number(page, f'#reasons [data-reason="{r}"]') for r in reasons} == dict(reasons)
        assert len(dead) > 0 and rows > 0
        # Nothing came from anywhere but the dashboard itself (no CDN).
        assert requests and all(r.startswith(url) for r in requests), set(requests)
    finally:
        if pipeline.poll() is None:
            finish(pipeline, sig=2, timeout=60)
        code, err = finish(dash, sig=2, timeout=30)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err


@pytest.mark.timeout(300)
def test_dashboard_says_when_the_database_is_missing_and_keeps_retrying(
        browser: Any, dsn: str, kafka_bootstrap: str) -> None:
    name = unique("later")
    later = dsn.rsplit("/", 1)[0] + "/" + name
    port = free_port()
    dash = dashboard(later, kafka_bootstrap, port)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        banner = page.wait_for_selector("#banner-database", timeout=30_000)
        assert f'database "{name}" does not exist' in banner.inner_text()
        assert page.inner_text("#st-database") == "database down"
        # The database appears, without its table: the page says what is missing.
        admin = psycopg2.connect(dsn)
        admin.autocommit = True
        with admin.cursor() as c:
            c.execute(f"CREATE DATABASE {name}")
        wait_for("the missing table on the page",
                 lambda: "ecomlogs migrate" in (page.text_content("#banners") or ""), timeout_s=30)
        # Once migrated, the page recovers by itself.
        ecomlogs.migrate(later)
        wait_for("the page to recover", lambda: page.query_selector("#banner-database") is None
                 and number(page, '[data-k="rows"]') == 0, timeout_s=30)
        assert page.inner_text("#st-database") == "database"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=5) as r:
            snap = json.loads(r.read())
        assert snap["database"]["ok"] is True and snap["database"]["rows"] == 0
    finally:
        code, err = finish(dash, sig=2, timeout=30)
        admin = psycopg2.connect(dsn)
        admin.autocommit = True
        with admin.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    assert code == 0 and "Traceback" not in err, err[-2000:]
    # The outage was logged once, not once per attempt.
    assert err.count("does not exist") <= 2, err


def test_a_busy_port_is_one_readable_line(dsn: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "ecomlogs", "dashboard", "--port", str(port), "--dsn", dsn],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"ecomlogs dashboard: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(choose another with --port)"]


def test_the_page_ships_everything_it_uses() -> None:
    static = ROOT / "python" / "ecomlogs" / "dashboard" / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


def test_prometheus_text_is_parsed() -> None:
    from ecomlogs.dashboard.collect import parse_prometheus

    text = """# HELP ecomlogs_events_consumed_total Events consumed.
# TYPE ecomlogs_events_consumed_total counter
ecomlogs_events_consumed_total{stage="processor"} 1234
ecomlogs_dead_letters_total{stage="loader",reason="database_rejected"} 2
ecomlogs_consumer_lag_messages{stage="loader",topic="clean_events",partition="0"} 17
ecomlogs_rows_inserted_total 99
odd_label{path="a \\"quoted\\" \\\\ value"} 1.5e3
"""
    assert parse_prometheus(text) == [
        ("ecomlogs_events_consumed_total", {"stage": "processor"}, 1234.0),
        ("ecomlogs_dead_letters_total", {"stage": "loader", "reason": "database_rejected"}, 2.0),
        ("ecomlogs_consumer_lag_messages", {"stage": "loader", "topic": "clean_events", "partition": "0"}, 17.0),
        ("ecomlogs_rows_inserted_total", {}, 99.0),
        ("odd_label", {"path": 'a "quoted" \\ value'}, 1500.0),
    ]


def test_metrics_endpoints_give_rates_and_lag_when_given(dsn: str, kafka_bootstrap: str) -> None:
    """A stand-in for a stage's Prometheus endpoint (the stages' own are built separately): its counters
    become the processor's and loader's rates and lag; an endpoint that stops answering is reported."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from ecomlogs.dashboard.collect import Collector

    body = {"text": ""}

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = body["text"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    collector = Collector(dsn=dsn, bootstrap_servers=kafka_bootstrap, metrics_urls=[url])
    try:
        for consumed, rows in ((1000, 500), (3000, 1500)):
            body["text"] = (f'ecomlogs_events_consumed_total{{stage="processor"}} {consumed}\n'
                            f'ecomlogs_events_consumed_total{{stage="loader"}} {rows}\n'
                            f"ecomlogs_rows_inserted_total {rows}\n"
                            'ecomlogs_consumer_lag_messages{stage="processor",topic="raw_events",partition="0"} 7\n'
                            'ecomlogs_consumer_lag_messages{stage="processor",topic="raw_events",partition="1"} 5\n'
                            'ecomlogs_dead_letters_total{stage="processor",reason="missing_currency"} 3\n')
            collector.poll_metrics()
        snap = collector.snapshot()
        processor, loader = snap["stages"]["processor"], snap["stages"]["loader"]
        assert processor["source"] == "metrics" and processor["lag"] == 12 and processor["rate"] > 0
        assert loader["source"] == "metrics" and loader["rate"] > 0
        assert snap["metrics"]["dead_letters"] == {"processor/missing_currency": 3.0}
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ecomlogs.EcomlogsError) as e:
        collector.poll_metrics()
    assert url in str(e.value)


# ---------------------------------------------------------------------------------------------- bad input
# Nothing listens on these: a dashboard that went on to connect instead of refusing its input would keep
# running (and the subprocess time out) rather than exit 2 at once.
NOWHERE = ["--dsn", "postgresql://postgres@127.0.0.1:1/nowhere", "--bootstrap-servers", "127.0.0.1:1"]
SECRET = "hunter2topsecret"


@pytest.mark.parametrize("flags, says", [
    (["--metrics-url", "http://[::1"], "is not a valid URL"),
    (["--metrics-url", "ftp://127.0.0.1/metrics"], "http:// or https://"),
    (["--metrics-url", "127.0.0.1:9101/metrics"], "http:// or https://"),
    (["--metrics-url", "http:///metrics"], "has no host"),
    (["--metrics-url", "http://127.0.0.1:99999/metrics"], "is not a valid URL"),
    (["--metrics-url", "http://127.0.0.1:9101/me trics"], "a space or a control character"),
    (["--metrics-url", f"http://user:{SECRET}@127.0.0.1:9101/metrics"], "user name or password"),
    (["--extra-config", "no.such.prop=1"], "no.such.prop=***: No such configuration property"),
    (["--extra-config", f"sasl.pasword={SECRET}"], "sasl.pasword=***"),
    (["--extra-config", f"sasl.password={SECRET}", "--extra-config", "linger.ms=soon"], "linger.ms=soon"),
    (["--extra-config", f"sasl.password={SECRET}", "--extra-config", f"ssl.key.password={SECRET}",
      "--extra-config", f"x.token={SECRET}"], "x.token=***: No such configuration property"),
    (["--extra-config", f"sasl.password:{SECRET}"], "--extra-config expects KEY=VALUE"),
    (["--extra-config", f"={SECRET}"], "--extra-config expects KEY=VALUE"),
    (["--dlq-topic", ""], "is not a legal Kafka topic name"),
    (["--dlq-topic", "dead letters!"], "is not a legal Kafka topic name"),
    (["--dlq-topic", "x" * 250], "is not a legal Kafka topic name"),
    (["--dlq-topic", ".."], "is not a legal Kafka topic name"),
    (["--interval", "0"], "--interval must be between 0.1 and 3600"),
    (["--interval", "3601"], "interval must be between"),
    (["--interval", "nan"], "--interval must be a number of seconds"),
    (["--interval", "inf"], "interval must be between"),
    (["--port", "65536"], "port must be between 0 and 65535"),
    (["--port", "-1"], "port must be between 0 and 65535"),
    (["--host", "no-such-host.invalid"], "is not an address of this machine"),
    (["--host", "192.0.2.1"], "is not an address of this machine"),
    (["--host", ""], "--host cannot be empty"),
    (["--allow-host", "http://dash.example/"], "--allow-host expects a host name"),
    (["--allow-host", "dash.example:8050"], "--allow-host expects a host name"),
    (["--allow-host", ""], "--allow-host cannot be empty"),
], ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None)
def test_bad_input_is_one_line_and_exit_2_before_connecting(flags: list[str], says: str) -> None:
    began = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ecomlogs", "dashboard", "--port", "0", *NOWHERE, *flags],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - began
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("ecomlogs dashboard: error: "), p.stderr
    assert says in lines[0], lines[0]
    assert SECRET not in p.stderr + p.stdout
    assert took < 10, f"{took:.1f} s"


# ---------------------------------------------------------------------------------------------- host header
def get(port: int, path: str, host: Optional[str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if host is None:  # no Host header at all
            conn.putrequest("GET", path, skip_host=True)
            conn.endheaders()
        else:
            conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_only_the_dashboards_own_host_names_are_answered(dsn: str, kafka_bootstrap: str) -> None:
    """A page elsewhere in the same browser that makes its own name resolve to 127.0.0.1 (DNS rebinding)
    sends its own name as Host: it gets nothing."""
    port = free_port()
    dash = dashboard(dsn, kafka_bootstrap, port, "--allow-host", "dash.example", "--allow-host", "Other.Example.")
    try:
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "localhost.evil",
                     f"dash.example.evil:{port}", f"127.0.0.1:{port}@evil.example", "[::1", ""):
            for path in ("/api/snapshot", "/", "/static/app.js"):
                status, body = get(port, path, host)
                assert status == (403 if host else 400), (host, path, status)
                assert b"database" not in body and b"function" not in body and b"<html" not in body, body
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"LOCALHOST.:{port}", f"[::1]:{port}",
                     f"dash.example:{port}", "other.example", f"app.localhost:{port}", f"192.168.1.20:{port}"):
            status, body = get(port, "/api/snapshot", host)
            assert status == 200, (host, status, body)
            assert "database" in json.loads(body)
        status, _ = get(port, "/api/snapshot", None)
        assert status == 400
    finally:
        code, err = finish(dash, sig=2, timeout=30)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    # One warning per refused name, however often it was asked for.
    assert err.count("refused requests for Host 'evil.example'") == 1, err[-3000:]


# ---------------------------------------------------------------------------------------------- NaN
class StandInMetrics:
    """A stand-in for a stage's Prometheus endpoint (a real HTTP server): serves ``text()`` on every GET."""

    def __init__(self, text: Callable[[], str]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                data = outer.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.text = text
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def strict_json(text: str) -> Any:
    """JSON as the browser parses it: NaN, Infinity and -Infinity are not JSON."""
    def refuse(word: str) -> None:
        raise AssertionError(f"{word} in the snapshot: not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.timeout(300)
def test_nan_and_infinities_from_a_metrics_endpoint_still_make_a_page(browser: Any, db: str,
                                                                     kafka_bootstrap: str) -> None:
    ecomlogs.migrate(db)
    scrapes = {"n": 0}

    def text() -> str:
        # The processor's counter grows (a rate to show); everything else is NaN or infinite.
        scrapes["n"] += 1
        return (f'ecomlogs_events_consumed_total{{stage="processor"}} {1000 * scrapes["n"]}\n'
                'ecomlogs_events_consumed_total{stage="loader"} NaN\n'
                'ecomlogs_consumer_lag_messages{stage="processor",topic="raw_events",partition="0"} +Inf\n'
                'ecomlogs_consumer_lag_messages{stage="loader",topic="clean_events",partition="0"} NaN\n'
                "ecomlogs_rows_inserted_total -Inf\n"
                'ecomlogs_dead_letters_total{stage="processor",reason="missing_currency"} NaN\n')

    metrics = StandInMetrics(text)
    port = free_port()
    dash = dashboard(db, kafka_bootstrap, port, "--metrics-url", metrics.url)
    try:
        def scraped() -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=5) as r:
                snap = strict_json(r.read().decode())
            return snap if snap["metrics"]["ok"] and snap["stages"]["processor"]["rate"] else None

        snap = wait_for("the metrics in the snapshot", scraped, timeout_s=30)
        processor, loader = snap["stages"]["processor"], snap["stages"]["loader"]
        assert processor["source"] == "metrics" and processor["lag"] is None and processor["rate"] > 0
        assert loader["source"] == "metrics" and loader["lag"] is None and loader["rate"] is None
        assert snap["metrics"]["rows_inserted"] is None
        assert snap["metrics"]["dead_letters"] == {"processor/missing_currency": None}

        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/")
        wait_for("the row count on the page", lambda: value(page, '[data-k="rows"]') == "0", timeout_s=30)
        wait_for("the processor's rate on the page",
                 lambda: float(value(page, '[data-k="processor_rate"]') or 0) > 0, timeout_s=30)
        assert page.inner_text('[data-k="rows"]') == "0"
        rate_text = page.inner_text('[data-k="processor_rate"]').replace(",", "")
        assert math.isfinite(float(rate_text)) and float(rate_text) > 0, rate_text
        for key in ("processor_lag", "loader_lag", "loader_rate"):
            assert page.inner_text(f'[data-k="{key}"]') == "–", key
            assert value(page, f'[data-k="{key}"]') == ""
        assert page.query_selector("#banner-server") is None
        assert page.query_selector("#banner-metrics") is None
        assert "NaN" not in page.inner_text("body") and "Infinity" not in page.inner_text("body")
        assert page.inner_text("#st-metrics") == "metrics"
        assert not errors, errors
    finally:
        metrics.close()
        code, err = finish(dash, sig=2, timeout=30)
    assert code == 0 and "Traceback" not in err, err[-3000:]


# ---------------------------------------------------------------------------------------------- early close
def abort_request(port: int) -> None:
    """Sends a request and closes the connection at once, without reading the answer (RST, as a browser
    tab that goes away does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /api/snapshot HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_client_that_goes_away_early_is_one_line_not_a_traceback(
        log_format: str, dsn: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    log_file = tmp_path / "stderr.log"
    with log_file.open("w") as sink:
        # Debug level, so that the line about the client is there to wait for.
        dash = dashboard(dsn, kafka_bootstrap, port, "-v", "--log-format", log_format, stderr=sink)
    try:
        aborted = 0

        def logged() -> bool:
            nonlocal aborted
            abort_request(port)
            aborted += 1
            return "closed the connection early" in log_file.read_text()

        wait_for("the early close in the log", logged, timeout_s=30, every_s=0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=5) as r:
            assert r.status == 200  # still serving
        lines = log_file.read_text().splitlines()
    finally:
        finish(dash, sig=2, timeout=30)
    text = "\n".join(lines)
    assert "Traceback" not in text and "Exception occurred during processing" not in text, text[-3000:]
    early = [line for line in lines if "closed the connection early" in line]
    assert 1 <= len(early) <= aborted, text[-3000:]
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # every line a JSON object, the start line included
        assert any(r["message"].startswith("dashboard on http://127.0.0.1:") for r in records)
        assert all("exception" not in r for r in records)
