"""The benchmark (``bench/bench.py``, in the repository, not the package) and the baseline it measures
against (``baseline/``). The benchmark runs themselves are marked slow: ``./dev test -m slow`` runs them.

Only counts and the shape of the results are checked: no timing is ever asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pytest

if TYPE_CHECKING:
    from devstack import StackInfo

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "baseline"
BENCH = str(REPO_ROOT / "bench" / "bench.py")
sys.path.insert(0, str(REPO_ROOT / "bench"))
BENCH_TIMEOUT_S = 300
CONSUMER_BENCH_TIMEOUT_S = 420
SCRIPT_TIMEOUT_S = 120
READ_TIMEOUT_S = 60.0

STAGE1_ROWS = {
    ("stage1/generate", "throughput"),
    ("stage1/generate", "CPU per event"),
    ("stage1/validate", "throughput"),
    ("stage1/validate", "CPU per event"),
    ("stage1/produce", "throughput"),
    ("stage1/produce", "CPU per event"),
    ("stage1/produce", "peak RSS"),
}


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _last_json_line(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "the script printed nothing on stdout"
    return json.loads(lines[-1])


def _run(args: list[str], timeout: float = SCRIPT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{args[0]} exited with {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def _read_topic(bootstrap_servers: str, topic: str, expected: int, timeout_s: float = READ_TIMEOUT_S) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the start): stops at ``expected`` records plus one short
    extra poll (so a surplus shows), or at ``timeout_s``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers,
        "group.id": _unique("test_bench_reader"),
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1000, timeout=0.5 if len(records) >= expected else 1.0)
            for msg in batch:
                assert msg.error() is None, msg.error()
                records.append(msg)
            if not batch and len(records) >= expected:
                break
        return records
    finally:
        consumer.close()


def _delete_topics(bootstrap_servers: str, topics: list[str]) -> None:
    from bench import delete_topics

    delete_topics(bootstrap_servers, topics)


def _positive_number(value: Optional[float]) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_bench_small_stage1(stack: StackInfo, tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = _run(
        [BENCH, "--small", "--sections", "stage1", "--out", str(out),
         "--bootstrap-servers", stack.bootstrap_servers, "--dsn", stack.dsn],
        timeout=BENCH_TIMEOUT_S,
    )
    assert "| section | metric | ecomlogs | baseline | ratio |" in proc.stdout

    latest = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    dated = [p for p in out.glob("*.json") if p.name != "latest.json"]
    assert len(dated) == 1 and json.loads(dated[0].read_text(encoding="utf-8")) == latest
    assert {"schema_version", "created_utc", "host", "config", "sections", "table", "duration_s"} <= latest.keys()

    config = latest["config"]
    assert config["small"] is True and config["sections"] == ["stage1"]
    events, produce_events, repeat = config["events"], config["produce_events"], config["repeat"]
    stage1 = latest["sections"]["stage1"]
    assert set(stage1) == {"generate", "validate", "produce"}

    for part, n in (("generate", events), ("validate", events), ("produce", produce_events)):
        runs = stage1[part]["runs"]
        assert stage1[part]["events"] == n and len(runs) == repeat
        for run in runs:
            assert set(run) == {"ecomlogs", "baseline"}
            for side in run.values():
                assert side["count"] == n, (part, side)
                assert side["wall_s"] > 0 and side["cpu_s"] >= 0

    # Both validators see the same list and must agree on it; about a quarter of it is invalid.
    valid = stage1["validate"]["valid"]
    assert stage1["validate"]["validators_agree"] is True
    assert valid["ecomlogs"] == valid["baseline"]
    assert 0.5 * events < valid["ecomlogs"] < 0.95 * events

    # Each producer run went to its own topic, deleted afterwards.
    assert len(stage1["produce"]["topics"]) == 2 * repeat
    for run in stage1["produce"]["runs"]:
        assert all(side["max_rss_mib"] > 0 for side in run.values())

    table = latest["table"]
    assert {(row["section"], row["metric"]) for row in table} == STAGE1_ROWS
    for row in table:
        assert set(row) == {"section", "metric", "unit", "better", "ecomlogs", "baseline", "ratio"}
        assert row["better"] in {"higher", "lower"}
        assert all(_positive_number(row[k]) for k in ("ecomlogs", "baseline", "ratio")), row

    markdown = (out / "latest.md").read_text(encoding="utf-8")
    assert "| section | metric | ecomlogs | baseline | ratio |" in markdown
    for section, metric in STAGE1_ROWS:
        assert any(section in line and metric in line for line in markdown.splitlines()), (section, metric)


def _table_keys(table: list[dict[str, Any]], section: str) -> set[tuple[str, str]]:
    return {(row["section"], row["metric"]) for row in table if row["section"] == section}


@pytest.mark.slow
def test_bench_small_consumer_sections(stack: StackInfo, tmp_path: Path) -> None:
    """process, load, e2e and latency at --small sizes: every count must come out right (rows == valid
    events, one row per event id for ecomlogs), and the report files must hold every section."""
    out = tmp_path / "results"
    sections = ["process", "load", "e2e", "latency"]
    proc = _run(
        [BENCH, "--small", "--sections", ",".join(sections), "--out", str(out),
         "--bootstrap-servers", stack.bootstrap_servers, "--dsn", stack.dsn],
        timeout=CONSUMER_BENCH_TIMEOUT_S,
    )
    assert "| section | metric | ecomlogs | baseline | ratio |" in proc.stdout
    for name in ("latest.json", "latest.md", "latest.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    assert {"schema_version", "config", "sections", "table", "references", "chart", "duration_s"} <= report.keys()
    config = report["config"]
    assert config["sections"] == sections and config["small"] is True
    assert set(report["sections"]) == set(sections)

    # process: both processors read all of the same raw topic and agree on what is valid.
    process = report["sections"]["process"]
    n = config["process_events"]
    assert process["events"] == n and len(process["runs"]) == config["repeat"]
    assert process["processors_agree"] is True
    valid = process["valid"]["ecomlogs"]
    assert 0.5 * n < valid < 0.95 * n
    for run in process["runs"]:
        assert set(run) == {"ecomlogs", "baseline"}
        for side in run.values():
            assert side["count"] == n and side["wall_s"] > 0 and side["max_rss_mib"] > 0
            assert side["extra"]["valid"] == valid and side["extra"]["valid"] + side["extra"]["invalid"] == n

    # load: the clean topic is the valid part of the same raw topic; each loader wrote every row once.
    load = report["sections"]["load"]
    assert load["rows"] == valid
    for run in load["runs"]:
        assert set(run) == {"ecomlogs", "ecomlogs_b500", "baseline", "copy"}
        for name, side in run.items():
            assert side["count"] == valid, name
            assert side["extra"]["rows_per_s"] > 0, name
            if name != "copy":
                table = side["extra"]["table"]
                assert table["rows"] == valid, name
                if name.startswith("ecomlogs"):
                    assert table["distinct_event_ids"] == valid, name
    assert {ref["figure"] for ref in report["references"]} >= {
        "server-side COPY FROM file (statement time)", "ecomlogs batch 50,000 / COPY", "baseline / COPY"}

    # e2e: every raw event processed, every valid one a row, and (ecomlogs) no duplicate.
    e2e = report["sections"]["e2e"]
    assert e2e["events"] == config["e2e_events"] and len(e2e["runs"]) == config["e2e_repeat"]
    for run in e2e["runs"]:
        for name, side in run.items():
            extra = side["extra"]
            assert side["count"] == config["e2e_events"], name
            assert extra["rows"] == extra["valid"] > 0, name
            assert 0 < side["wall_s"] and side["cpu_s"] > 0, name
            assert set(extra["processes"]) == {"producer", "processor", "loader"}
            assert all(p["max_rss_mib"] > 0 and p["cpu_s"] > 0 for p in extra["processes"].values()), name
        assert run["ecomlogs"]["extra"]["distinct_event_ids"] == run["ecomlogs"]["extra"]["rows"]

    # latency: ecomlogs gets every valid event in by the cut-off; the baseline's rows add up (arrived +
    # written at shutdown) and at 2/s none arrive in time, since its loader waits for 500.
    latency = report["sections"]["latency"]
    rates = [r["rate"] for r in latency["rates"]]
    assert rates == [2, 1000, 50000] and latency["baseline_rates"] == [2, 1000]
    for rate in rates:
        for run in latency["runs"][str(rate)]:
            ours = run["ecomlogs"]
            assert ours["rows_total"] == ours["valid"] == ours["arrived"]["rows"] > 0, rate
            assert ours["arrived"]["p50_s"] is not None and ours["arrived"]["p99_s"] >= ours["arrived"]["p50_s"]
            if rate in latency["baseline_rates"]:
                theirs = run["baseline"]
                assert theirs["arrived"]["rows"] + theirs["flushed_at_shutdown"]["rows"] == theirs["valid"] > 0
                assert theirs["rows_total"] == theirs["valid"]
            else:
                assert "baseline" not in run
        if rate == 2:
            assert all(run["baseline"]["arrived"]["rows"] == 0 for run in latency["runs"]["2"])

    table = report["table"]
    assert _table_keys(table, "process") == {("process", m) for m in ("throughput", "CPU per event", "peak RSS")}
    assert _table_keys(table, "load") == {
        ("load", f"{m}, batch {b}")
        for m in ("throughput", "client CPU per row", "PostgreSQL CPU per row", "peak RSS")
        for b in ("50,000", "500")
    }
    assert ("e2e", "throughput") in _table_keys(table, "e2e")
    assert ("e2e", "stage CPU per 1M raw events (3 processes)") in _table_keys(table, "e2e")
    assert _table_keys(table, "latency") == {
        ("latency", f"{m} @ {r}")
        for m in ("p50", "p99", "rows arrived by the cut-off") for r in ("2/s", "1,000/s", "50,000/s")
    }
    for row in table:
        assert set(row) == {"section", "metric", "unit", "better", "ecomlogs", "baseline", "ratio"}
        assert isinstance(row["ecomlogs"], (int, float)) and math.isfinite(row["ecomlogs"]), row
        if row["section"] != "latency" and "PostgreSQL" not in row["metric"] and "CPU per 1M" not in row["metric"]:
            assert all(_positive_number(row[k]) for k in ("ecomlogs", "baseline", "ratio")), row

    markdown = (out / "latest.md").read_text(encoding="utf-8")
    for heading in ("**process**", "**load**", "**e2e**", "**latency**", "CPU seconds per process"):
        assert heading in markdown, heading


HISTORY_QUERIES = {"funnel today", "revenue today", "top 10 customers", "funnel 7 days",
                   "dashboard: rows and last load", "dashboard: rows by type", "dashboard: stored offsets",
                   "dashboard tick"}
ROLLUPS_AND_OFFSETS = {"ecomlogs_daily_rollup", "ecomlogs_customer_rollup", "ecomlogs_kafka_offsets"}


def test_bench_history_tiny(stack: StackInfo, tmp_path: Path) -> None:
    """The history section end to end at tiny sizes (two sizes, 2,000 new rows, a 1 s dashboard window): both
    designs measured at each size, the loader's counts right, the new design's readers reading only the
    rollups (and the loader's offsets) while the current design's read the events table."""
    out = tmp_path / "history"
    proc = _run(
        [BENCH, "--sections", "history", "--history-rows", "0,20e3", "--history-new-rows", "2000",
         "--history-window", "1", "--repeat", "1", "--out", str(out),
         "--bootstrap-servers", stack.bootstrap_servers, "--dsn", stack.dsn],
        timeout=CONSUMER_BENCH_TIMEOUT_S,
    )
    assert "| rows already in the table | COPY of 2k new rows |" in proc.stdout
    assert "| section | metric |" not in proc.stdout  # no ecomlogs/baseline pairs in this section
    report = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    assert [p for p in out.glob("*.json") if p.name != "latest.json"], "no timestamped JSON"
    assert report["config"]["sections"] == ["history"] and report["config"]["history_rows"] == [0, 20_000]
    assert report["errors"] == {}
    history = report["sections"]["history"]
    assert history["new_rows"] == 2000 and history["history_rows"] == [0, 20_000]

    designs = history["designs"]
    assert designs["current"]["migrations"] == ["0001", "0002", "0003", "0004", "0005"]
    assert "0006" in designs["new"]["migrations"]
    for name, design in designs.items():
        assert [s["rows"] for s in design["sizes"]] == [0, 20_000], name
        for size in design["sizes"]:
            assert _positive_number(size["copy"]["rows_per_s"]), (name, size["rows"])
            assert set(size["queries"]) == HISTORY_QUERIES
            for query, figures in size["queries"].items():
                assert _positive_number(figures["seconds"]) and figures["sql"], (name, query)
                assert figures["relations"], (name, query)
                if name == "new":
                    assert set(figures["relations"]) <= ROLLUPS_AND_OFFSETS, (query, figures["relations"])
            dashboard = size["dashboard"]
            assert math.isfinite(dashboard["cpu_pct_of_core"]) and dashboard["ticks_completed"] >= 1, dashboard
        # At 20k rows the generated history went in and, on the new design, into the rollups too.
        if name == "new":
            assert design["sizes"][1]["growth"]["rollups"]["days"] >= 90
    for query in ("funnel today", "top 10 customers", "dashboard: rows and last load"):
        assert "kafka_events_silver" in designs["current"]["sizes"][1]["queries"][query]["relations"], query

    loader = history["loader"]
    for run in ("empty", "statements", "history"):
        assert loader[run]["rows"] == 2000 and loader[run]["table"]["distinct_event_ids"] == 2000, run
        assert _positive_number(loader[run]["rows_per_s"]), run
    assert loader["history"]["history_rows"] == 20_000
    statements = loader["statements"]["statements"]
    assert statements is not None, loader["statements"]  # the dev stack's log is readable
    assert statements["statements"]["rollups"] >= 2 and statements["statements"]["copy"] >= 1, statements
    assert _positive_number(statements["rollup_ms_per_batch"])

    summary = history["summary"]
    assert summary["new_design_reads_only_rollups"] is True
    assert _positive_number(summary["loader_over_copy"]["empty"]) and _positive_number(summary["loader_history_over_empty"])
    markdown = (out / "latest.md").read_text(encoding="utf-8")
    assert "**history**" in markdown and "Current design" in markdown and "New design" in markdown


def test_bench_rejects_unknown_sections(tmp_path: Path) -> None:
    for sections in ("nope", "stage1,nope"):
        proc = subprocess.run(
            [sys.executable, BENCH, "--sections", sections, "--out", str(tmp_path)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2 and "section" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_baseline_producer_round_trip(stack: StackInfo) -> None:
    import ecomlogs
    from bench import load_baseline

    is_valid_event = load_baseline(REPO_ROOT, "streamProcessor").is_valid_event  # the original's rules

    topic = _unique("test_baseline_raw")
    ecomlogs.ensure_topics([topic], bootstrap_servers=stack.bootstrap_servers, partitions=3)
    try:
        proc = _run([str(BASELINE / "producer.py"), "--count", "200", "--interval-ms", "0", "--quiet",
                     "--topic", topic, "--bootstrap-servers", stack.bootstrap_servers, "--seed", "7"])
        stats = _last_json_line(proc.stdout)
        assert stats["produced"] == 200 and stats["delivered"] == 200 and stats["failed"] == 0
        assert stats["elapsed_s"] >= 0

        records = _read_topic(stack.bootstrap_servers, topic, 200)
        assert len(records) == 200
        events = [json.loads(msg.value()) for msg in records]
        assert len({e["event_id"] for e in events}) == 200
        for msg, event in zip(records, events):
            customer = event.get("customer_id")
            assert msg.key() == (customer.encode() if customer is not None else None)
            assert {"event_id", "event_type", "timestamp", "is_valid"} <= event.keys()
        invalid = sum(1 for e in events if not is_valid_event(e))
        assert 10 <= invalid <= 90  # about 25%
    finally:
        _delete_topics(stack.bootstrap_servers, [topic])


def test_baseline_pipeline_into_postgres(stack: StackInfo) -> None:
    """producer -> streamProcessor -> psqlConsumer, each a subprocess, into a throw-away table."""
    import ecomlogs
    import psycopg2

    raw, clean, table = _unique("test_baseline_raw"), _unique("test_baseline_clean"), _unique("test_baseline_silver")
    ecomlogs.ensure_topics([raw, clean], bootstrap_servers=stack.bootstrap_servers, partitions=3)
    servers = ["--bootstrap-servers", stack.bootstrap_servers]
    try:
        _run([str(BASELINE / "producer.py"), "--count", "300", "--interval-ms", "0", "--quiet", "--topic", raw,
              "--seed", "11", *servers])
        processed = _last_json_line(_run([
            str(BASELINE / "streamProcessor.py"), "--input-topic", raw, "--output-topic", clean,
            "--group-id", _unique("test_processor"), "--until-idle", "2", "--quiet", *servers,
        ]).stdout)
        assert processed["consumed"] == 300 and processed["failed"] == 0
        assert processed["valid"] + processed["invalid"] == 300 and 0 < processed["invalid"] < 300

        # Without --create-table a missing table is a one-line error, exit code 2.
        missing = subprocess.run(
            [sys.executable, str(BASELINE / "psqlConsumer.py"), "--topic", clean, "--table", table,
             "--group-id", _unique("test_loader"),
             "--dsn", stack.dsn, "--until-idle", "1", "--quiet", *servers],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
        assert missing.returncode == 2 and "does not exist" in missing.stderr

        loaded = _last_json_line(_run([
            str(BASELINE / "psqlConsumer.py"), "--topic", clean, "--group-id", _unique("test_loader"),
            "--dsn", stack.dsn, "--table", table, "--create-table", "--batch-size", "100", "--until-idle", "2",
            "--quiet", *servers,
        ]).stdout)
        assert loaded["rows"] == processed["valid"] and loaded["skipped"] == 0

        with psycopg2.connect(stack.dsn) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT count(*), count(DISTINCT event_id), min(amount) FROM "{table}"')
            rows, distinct, min_amount = cur.fetchone()
        conn.close()
        assert rows == distinct == processed["valid"] and min_amount > 0
    finally:
        _delete_topics(stack.bootstrap_servers, [raw, clean])
        with psycopg2.connect(stack.dsn) as conn, conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
