"""Helpers for integration tests: fresh topic names and an independent confluent-kafka reader."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import psycopg2

import ecomlogs

from confluent_kafka import Consumer, TopicPartition


ROOT = Path(__file__).resolve().parent.parent


def start(cmd: list[str], capture: bool = True) -> subprocess.Popen:
    """Starts a stage in the repo root; stderr is captured (text) unless ``capture`` is False."""
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if capture else subprocess.DEVNULL, text=True)


def finish(proc: subprocess.Popen, sig: Optional[int] = None, timeout: float = 300) -> tuple[int, str]:
    """Optionally signals ``proc``, then waits for it (killing it if it overruns); returns (exit code,
    stderr)."""
    try:
        if sig is not None:
            proc.send_signal(sig)
        _out, err = proc.communicate(timeout=timeout)
        return proc.returncode, err or ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def read_all(
    bootstrap: str,
    topic: str,
    expected: Optional[int] = None,
    timeout_s: float = 60.0,
    idle_s: float = 3.0,
    isolation: str = "read_uncommitted",
    partitions: int = 3,
) -> list[Any]:
    """Reads a topic from the start with manual assignment (no group join), until ``expected`` messages
    arrived or nothing came for ``idle_s`` seconds; never longer than ``timeout_s``."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            if expected is not None and len(out) >= expected:
                # Keep reading briefly so that extra (duplicate) messages would be seen too.
                idle_s = min(idle_s, 1.0)
            batch = c.consume(num_messages=10000, timeout=0.5)
            good = [m for m in batch if m.error() is None]
            out.extend(good)
            if good:
                last = time.monotonic()
            elif time.monotonic() - last > idle_s and (expected is None or len(out) >= expected):
                break
        return out
    finally:
        c.close()


_ABORT_FILTERING: dict[str, bool] = {}


def broker_hides_aborted_transactions(bootstrap: str) -> bool:
    """Probes whether read_committed consumers of this broker skip aborted transactions, as Apache Kafka
    does. The Tansu build of the dev stack does not (it sends no aborted-transaction list in fetch
    responses), so exactly-once tests assert the strongest property this broker lets a client observe."""
    if bootstrap not in _ABORT_FILTERING:
        import ecomlogs
        from confluent_kafka import Producer

        topic = unique("abort_probe")
        ecomlogs.ensure_topics([topic], bootstrap_servers=bootstrap, partitions=1)
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique("probe")})
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(topic, value=b"aborted")
        p.flush(30)
        p.abort_transaction(30)
        p.begin_transaction()
        p.produce(topic, value=b"committed")
        p.commit_transaction(30)
        seen = [m.value() for m in read_all(bootstrap, topic, expected=1, isolation="read_committed",
                                            partitions=1, idle_s=2)]
        _ABORT_FILTERING[bootstrap] = seen == [b"committed"]
    return _ABORT_FILTERING[bootstrap]


# ---------------------------------------------------------------------------------------------- loader
def rows(dsn: str) -> list[tuple]:
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as c:
        c.execute("SELECT event_id, customer_id, event_type, amount, currency, event_timestamp "
                  "FROM kafka_events_silver")
        return c.fetchall()


def row_count(dsn: str) -> int:
    try:
        return len(rows(dsn))
    except psycopg2.errors.UndefinedTable:  # the loader has not migrated yet
        return 0


def produce_clean(bootstrap: str, topic: str, n: int, seed: int) -> dict[str, dict]:
    """Produces n events (~25% invalid) to a raw topic, runs the Rust processor into `topic`, and returns
    the valid events by event_id (the expected rows)."""
    raw = unique("raw")
    ecomlogs.produce(n, bootstrap_servers=bootstrap, topic=raw, seed=seed)
    st = ecomlogs.process(bootstrap_servers=bootstrap, input_topic=raw, output_topic=topic,
                          dlq_topic=unique("dlq"), group_id=unique("g"), until_idle_s=2)
    assert st.consumed == n
    msgs = read_all(bootstrap, topic, expected=st.valid, timeout_s=120)
    events = {json.loads(m.value())["event_id"]: json.loads(m.value()) for m in msgs}
    assert len(events) == st.valid
    return events


def loader_cmd(bootstrap: str, topic: str, dsn: str, group: str, *extra: str) -> list[str]:
    return [sys.executable, "psqlConsumer.py", "--bootstrap-servers", bootstrap, "--topic", topic,
            "--dsn", dsn, "--group-id", group, "--dlq-topic", unique("dlq"), *extra]


def run_until_idle(cmd: list[str], idle: float = 3.0, timeout: float = 300) -> str:
    p = subprocess.run([*cmd, "--until-idle", str(idle)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stderr


def assert_exact(dsn: str, expected: dict[str, dict]) -> None:
    got = rows(dsn)
    ids = [r[0] for r in got]
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert set(ids) == set(expected), f"missing {len(set(expected) - set(ids))}, extra {len(set(ids) - set(expected))}"
    for event_id, customer, etype, amount, currency, ts in got:
        e = expected[event_id]
        assert customer == e["customer_id"] and etype == e["event_type"] and currency == e["currency"]
        assert amount == Decimal(str(e["amount"])).quantize(Decimal("0.01"))  # exact to the cent
        # Stored as UTC, to the millisecond (the canonical form drops a zero fraction: "...:39Z").
        sent = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        assert sent.utcoffset() == timedelta(0)
        assert ts == sent.replace(tzinfo=None)


