"""Prometheus metrics and health checks of the stages, scraped from the real endpoint while the stages run
against the real broker and PostgreSQL; counters compared with what the stages report at exit."""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any, Iterator

import pytest

import ecomlogs
import prom
import psycopg2
from helpers import (assert_exact, finish, loader_cmd, produce_clean, row_count, run_until_caught_up, start, unique,
                     wait_for)


def test_producer_and_processor_counters_equal_their_stats(kafka_bootstrap: str) -> None:
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    with ecomlogs.serve_metrics() as server:
        before = prom.scrape(server.url)
        p = ecomlogs.produce(6000, bootstrap_servers=kafka_bootstrap, topic=raw, seed=5)
        st = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean,
                              dlq_topic=dlq, group_id=unique("g"), until_caught_up=True)
        after = prom.scrape(server.url)

    def grew(name: str, **labels: str) -> float:
        return prom.value(after, name, **labels) - prom.value(before, name, **labels)

    assert grew("ecomlogs_events_produced_total", stage="producer", topic=raw) == p.delivered == 6000
    assert grew("ecomlogs_events_consumed_total", stage="processor") == st.consumed == 6000
    assert grew("ecomlogs_events_produced_total", stage="processor", topic=clean) == st.valid
    assert grew("ecomlogs_events_produced_total", stage="processor", topic=dlq) == st.invalid
    assert st.by_reason and all(
        grew("ecomlogs_dead_letters_total", stage="processor", reason=r) == n for r, n in st.by_reason.items())
    assert grew("ecomlogs_batch_rows_sum", stage="processor") == st.consumed
    assert grew("ecomlogs_batch_rows_count", stage="processor") == st.batches
    # The process metrics come with the library (its CPU counter counts whole seconds).
    assert prom.value(after, "process_resident_memory_bytes") > 10_000_000
    assert ("process_cpu_seconds_total", frozenset()) in after


def _health(url: str) -> tuple[int, str]:
    try:
        return prom.get(url + "/healthz", timeout=5)
    except OSError as e:  # the endpoint not answering counts as unhealthy, with the reason
        return 0, str(e)


def test_loader_metrics_and_health_through_a_database_outage(kafka_bootstrap: str, private_pg: Any) -> None:
    clean, group, db = unique("clean"), unique("g"), private_pg.dsn
    expected = produce_clean(kafka_bootstrap, clean, 4000, seed=41)
    proc = start([*loader_cmd(kafka_bootstrap, clean, db, group), "--metrics-port", "0"])
    lines: list[str] = []
    follower = prom.StderrFollower(proc, lines)
    try:
        url = follower.endpoint()
        wait_for("every row counted in /metrics",
                 lambda: prom.value(prom.scrape(url), "ecomlogs_rows_inserted_total") == len(expected))
        s = prom.scrape(url)
        assert prom.value(s, "ecomlogs_event_to_row_seconds_count") == len(expected)
        assert prom.value(s, "ecomlogs_batch_rows_sum", stage="loader") == len(expected)
        assert prom.total(s, "ecomlogs_consumer_lag_messages", stage="loader", topic=clean) == 0
        assert prom.value(s, "ecomlogs_stage_up", stage="loader") == 1
        wait_for("/healthz 200 while everything is reachable", lambda: _health(url)[0] == 200)
        assert _health(url)[1].startswith("ok: loader")

        private_pg.stop(timeout=30)
        try:
            status, body = wait_for("/healthz 503 with PostgreSQL down",
                                    lambda: (lambda h: h if h[0] == 503 else None)(_health(url)), timeout_s=30)
            assert "loader: PostgreSQL is unavailable" in body
        finally:
            private_pg.start(timeout=60)
        wait_for("/healthz 200 once PostgreSQL is back", lambda: _health(url)[0] == 200, timeout_s=30)
        last = prom.scrape(url)
    finally:
        code = follower.stop(signal.SIGTERM, timeout=60)
    err = "".join(lines)
    assert code == 0, err[-3000:]
    m = re.search(r"loaded ([\d,]+) rows .* from ([\d,]+) records: ([\d,]+) duplicates skipped, ([\d,]+) dead", err)
    assert m, err[-2000:]
    rows, consumed, dups, dead = (int(g.replace(",", "")) for g in m.groups())
    assert prom.value(last, "ecomlogs_rows_inserted_total") == rows == len(expected) == row_count(db)
    assert prom.value(last, "ecomlogs_events_consumed_total", stage="loader") == consumed
    assert prom.value(last, "ecomlogs_duplicates_skipped_total") == dups
    assert prom.total(last, "ecomlogs_dead_letters_total", stage="loader") == dead


@pytest.fixture()
def own_role_db(dsn: str) -> Iterator[tuple[str, str]]:
    """A fresh database owned by a role of its own (not a superuser: a database's connection limit applies
    to it): (the role's DSN, the superuser's DSN), both for that database."""
    role, name = unique("loader"), unique("t")
    admin = psycopg2.connect(dsn, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"CREATE DATABASE {name} OWNER {role}")
    base = dsn.rsplit("/", 1)[0]
    try:
        yield base.replace("postgres@", f"{role}@", 1) + "/" + name, base + "/" + name
    finally:
        with admin.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            c.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def test_a_retry_streak_in_the_middle_of_a_batch_shows_in_health_and_metrics_as_it_happens(
        kafka_bootstrap: str, own_role_db: tuple[str, str]) -> None:
    """The loader's connection is cut while it writes a batch, and the database refuses new connections
    (too many connections, SQLSTATE 53300) for a while: the worker is blocked in that batch's retries, yet
    /healthz turns 503 with the reason within 5 s and ecomlogs_db_retries_total grows with each attempt.
    Once connections are allowed again every row is stored exactly once."""
    as_loader, as_admin = own_role_db
    clean, group = unique("clean"), unique("g")
    dbname = as_admin.rsplit("/", 1)[1]
    proc = start([*loader_cmd(kafka_bootstrap, clean, as_loader, group), "--metrics-port", "0"])
    lines: list[str] = []
    follower = prom.StderrFollower(proc, lines)
    admin = psycopg2.connect(as_admin, connect_timeout=10)
    admin.autocommit = True
    url = ""
    try:
        url = follower.endpoint()
        wait_for("the loader to start loading", lambda: prom.find(lines, r"loading " + clean))
        wait_for("/healthz 200", lambda: _health(url)[0] == 200)
        # Hold the table so that the first batch waits inside its COPY, then feed the loader.
        locker = psycopg2.connect(as_admin, connect_timeout=10)
        with locker.cursor() as c:
            c.execute("LOCK TABLE kafka_events_silver IN SHARE MODE")
        expected = produce_clean(kafka_bootstrap, clean, 3000, seed=47)

        def writer_pid() -> int | None:
            with admin.cursor() as c:
                c.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename <> 'postgres' "
                          "AND wait_event_type = 'Lock'", (dbname,))
                row = c.fetchone()
                return row[0] if row else None

        pid = wait_for("the loader's COPY to wait on the lock", writer_pid)
        assert _health(url)[0] == 200  # writing, not failing (yet)
        with admin.cursor() as c:
            c.execute(f"ALTER DATABASE {dbname} CONNECTION LIMIT 0")
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        cut = time.monotonic()
        locker.rollback()
        locker.close()
        try:
            status, body = wait_for("/healthz 503 with the reason",
                                    lambda: (lambda h: h if h[0] == 503 else None)(_health(url)), timeout_s=5)
            assert time.monotonic() - cut < 5
            assert body.startswith("loader: PostgreSQL is unavailable (") and ", retrying for " in body, body
            wait_for("the reason of the attempts that follow",
                     lambda: "SQLSTATE 53300" in _health(url)[1], timeout_s=10)
            # Counted as each attempt fails, while the batch is still unwritten.
            first = wait_for("a counted retry",
                             lambda: prom.value(prom.scrape(url), "ecomlogs_db_retries_total"), timeout_s=10)
            wait_for("more retries during the outage",
                     lambda: prom.value(prom.scrape(url), "ecomlogs_db_retries_total") >= first + 2, timeout_s=20)
            assert row_count(as_admin) == 0
            assert _health(url)[0] == 503
        finally:
            with admin.cursor() as c:
                c.execute(f"ALTER DATABASE {dbname} CONNECTION LIMIT -1")
        wait_for("every row stored", lambda: row_count(as_admin) == len(expected), timeout_s=60)
        wait_for("/healthz 200 once connections are allowed", lambda: _health(url)[0] == 200, timeout_s=30)
        # The counters follow the stage's stats at its next tick (a tenth of a second).
        last = wait_for("the rows counted", lambda: (s := prom.scrape(url)) and
                        prom.value(s, "ecomlogs_rows_inserted_total") == len(expected) and s, timeout_s=10)
    except AssertionError as e:
        health = _health(url) if url else None
        raise AssertionError(f"{e}\n/healthz: {health}\nthe loader's log:\n{''.join(lines)[-4000:]}") from None
    finally:
        admin.close()
        code = follower.stop(signal.SIGTERM, timeout=60)
    err = "".join(lines)
    assert code == 0, err[-3000:]
    assert_exact(as_admin, expected)
    m = re.search(r"([\d,]+) database retries", err)
    assert m, err[-2000:]
    retries = int(m.group(1).replace(",", ""))
    assert prom.value(last, "ecomlogs_db_retries_total") == retries >= 3
    assert prom.value(last, "ecomlogs_rows_inserted_total") == len(expected)


def test_json_logs_one_object_per_line_with_each_batch_at_its_commit(kafka_bootstrap: str, db: str) -> None:
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 1500, seed=43)
    err = run_until_caught_up([*loader_cmd(kafka_bootstrap, clean, db, unique("g")), "--log-format", "json"])
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "stage", "message"} <= r.keys() for r in records)
    stored = [r for r in records if r["stage"] == "loader" and r["message"].startswith("stored ")]
    assert sum(int(re.match(r"stored (\d+) rows", r["message"]).group(1)) for r in stored) == len(expected)
    assert records[-1]["message"].startswith(f"loaded {len(expected):,} rows")


def test_a_taken_metrics_port_is_one_line_and_exit_2(kafka_bootstrap: str, db: str) -> None:
    with ecomlogs.serve_metrics() as server:
        proc = start([*loader_cmd(kafka_bootstrap, unique("clean"), db, unique("g")),
                      "--metrics-port", str(server.port), "--until-idle", "1"])
        code, err = finish(proc, timeout=60)
    assert code == 2, err
    assert f"cannot serve metrics on 127.0.0.1:{server.port}" in err and "Traceback" not in err
