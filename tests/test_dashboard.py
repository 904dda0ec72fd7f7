"""`ecomlogs dashboard` in a real browser (Debian's Chromium, headless, driven by Playwright) against the real
broker and PostgreSQL while a pipeline runs: the page's numbers change as rows arrive and match the database
and the topics; a missing database is shown on the page while the server keeps retrying."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

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


def dashboard(dsn: str, bootstrap: str, port: int) -> subprocess.Popen:
    proc = start([sys.executable, "-m", "ecomlogs", "dashboard", "--port", str(port), "--dsn", dsn,
                  "--bootstrap-servers", bootstrap, "--interval", "0.5"])

    def answers() -> bool:
        assert proc.poll() is None, f"the dashboard exited: {proc.communicate()[1][-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for("the dashboard to answer", answers, timeout_s=30, every_s=0.2)
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
