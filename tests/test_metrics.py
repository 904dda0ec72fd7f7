"""Prometheus metrics and health checks of the stages, scraped from the real endpoint while the stages run
against the real broker and PostgreSQL; counters compared with what the stages report at exit."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import ecomlogs
import prom
from helpers import finish, loader_cmd, produce_clean, row_count, run_until_caught_up, start, unique, wait_for


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
