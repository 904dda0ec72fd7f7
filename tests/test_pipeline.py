"""The main job: `ecomlogs run` carries events through all three stages and reports from the views."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from helpers import read_all

ROOT = Path(__file__).resolve().parent.parent

# `ecomlogs run` uses the default topics and groups: each test runs it on a broker of its own.


def test_run_carries_every_valid_event_into_the_table_and_reports(memory_broker: Any, db: str) -> None:
    kafka_bootstrap = memory_broker.bootstrap_servers
    p = subprocess.run(
        [sys.executable, "-m", "ecomlogs", "run", "--count", "20000", "--seed", "8",
         "--bootstrap-servers", kafka_bootstrap, "--dsn", db],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"produced ([\d,]+) events .*?; ([\d,]+) valid -> ([\d,]+) new rows.*?; ([\d,]+) dead-lettered",
                  p.stdout)
    assert m, p.stdout
    produced, valid, new_rows, invalid = (int(g.replace(",", "")) for g in m.groups())
    assert produced == 20_000 and valid + invalid == produced
    assert new_rows == valid
    in_topic = {json.loads(m.value())["event_id"] for m in read_all(kafka_bootstrap, "clean_events")}
    assert len(in_topic) == valid
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT count(*), count(DISTINCT event_id) FROM kafka_events_silver")
        assert c.fetchone() == (new_rows, new_rows)
    for title in ("Funnel by day (UTC)", "Revenue by day and currency", "Top customers"):
        assert title in p.stdout
    # The status line reports per-stage progress.
    assert "produce " in p.stderr and "| process " in p.stderr and "| load " in p.stderr


def test_a_stuck_loader_is_named_in_the_status_line_and_the_drain_fails_instead_of_hanging(
        memory_broker: Any, db: str) -> None:
    kafka_bootstrap = memory_broker.bootstrap_servers
    import ecomlogs
    from ecomlogs.pipeline import run_pipeline

    ecomlogs.migrate(db)
    blocker = psycopg2.connect(db)
    lines: list[str] = []
    try:
        with blocker.cursor() as c:
            # Reads go on; every insert waits for this lock: the loader blocks inside its transaction.
            c.execute("LOCK TABLE kafka_events_silver IN SHARE MODE")
        t0 = time.monotonic()
        with pytest.raises(ecomlogs.StalledError) as caught:
            run_pipeline(count=3000, bootstrap_servers=kafka_bootstrap, dsn=db, stall_timeout_s=20,
                         status=lines.append)
        assert time.monotonic() - t0 < 90
    finally:
        blocker.rollback()
        blocker.close()
    message = str(caught.value)
    assert "loader" in message and "writing a batch to the database" in message, message
    stuck = [ln for ln in lines if "STUCK" in ln]
    assert stuck and "load " in stuck[-1] and "writing a batch to the database" in stuck[-1], lines[-3:]


def test_run_honours_partitions_and_the_invalid_ratio_from_the_environment(memory_broker: Any, db: str) -> None:
    import os

    from confluent_kafka.admin import AdminClient

    bs = memory_broker.bootstrap_servers
    p = subprocess.run(
        [sys.executable, "-m", "ecomlogs", "run", "--count", "2000", "--seed", "3", "--partitions", "2",
         "--bootstrap-servers", bs, "--dsn", db, "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "ECOMLOGS_INVALID_RATIO": "0"})
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"([\d,]+) valid -> ([\d,]+) new rows.*?; ([\d,]+) dead-lettered", p.stdout)
    assert m, p.stdout
    assert m.group(1) == m.group(2) == "2,000" and m.group(3) == "0", p.stdout
    topics = AdminClient({"bootstrap.servers": bs}).list_topics(timeout=10).topics
    for name in ("raw_events", "clean_events", "dead_letter_events"):
        assert len(topics[name].partitions) == 2, name
