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

from confluent_kafka import Consumer, KafkaError, TopicPartition


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
    isolation: str = "read_uncommitted",
) -> list[Any]:
    """Every record of ``topic`` from the start (manual assignment, no group join): reads until every
    partition reported its end (and, with ``expected``, at least that many arrived); never longer than
    ``timeout_s``. Records that come after the end are not waited for: write first, then read."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": True})
    try:
        deadline = time.monotonic() + timeout_s
        meta = c.list_topics(topic, timeout=min(timeout_s, 15))
        partitions = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        if not partitions or meta.topics[topic].error is not None:
            return []
        c.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[Any] = []
        ended: set[int] = set()
        while time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.2):
                if m.error() is None:
                    out.append(m)
                    ended.discard(m.partition())
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
            if len(ended) == len(partitions) and (expected is None or len(out) >= expected):
                break
        return out
    finally:
        c.close()


def wait_for(what: str, check: Any, timeout_s: float = 60.0, every_s: float = 0.05) -> Any:
    """Polls ``check()`` until it returns something truthy (returned); fails naming ``what`` after
    ``timeout_s``. For waiting on events instead of sleeping."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def wait_group_empty(bootstrap: str, group: str, timeout_s: float = 60.0) -> None:
    """Waits until a consumer group has no members (a killed member leaves when its session times out,
    6 s here), so that the next member gets every partition."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def empty() -> bool:
        try:
            d = admin.describe_consumer_groups([group], request_timeout=5)[group].result(10)
        except Exception:  # noqa: BLE001 - an unknown group is an empty one; anything else: ask again
            return False
        return not d.members or d.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)

    wait_for(f"consumer group {group} to have no members", empty, timeout_s=timeout_s, every_s=0.25)


def topic_size(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds now, by reading it (the dev broker's watermarks can be off)."""
    return len(read_all(bootstrap, topic, timeout_s=30))


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
        seen = [m.value() for m in read_all(bootstrap, topic, expected=1, isolation="read_committed")]
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
                          dlq_topic=unique("dlq"), group_id=unique("g"), until_caught_up=True)
    assert st.consumed == n
    msgs = read_all(bootstrap, topic, expected=st.valid, timeout_s=120)
    events = {json.loads(m.value())["event_id"]: json.loads(m.value()) for m in msgs}
    assert len(events) == st.valid
    return events


def loader_cmd(bootstrap: str, topic: str, dsn: str, group: str, *extra: str) -> list[str]:
    return [sys.executable, "psqlConsumer.py", "--bootstrap-servers", bootstrap, "--topic", topic,
            "--dsn", dsn, "--group-id", group, "--dlq-topic", unique("dlq"), *extra]


def run_until_idle(cmd: list[str], idle: float = 3.0, timeout: float = 300) -> str:
    """Runs a stage until it had no input for ``idle`` seconds (for input that is still arriving, or a
    group that a killed member still holds); asserts exit 0; returns its stderr."""
    p = subprocess.run([*cmd, "--until-idle", str(idle)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stderr


def run_until_caught_up(cmd: list[str], timeout: float = 300) -> str:
    """Runs a stage until it has read every assigned partition to its end (for input written before
    it starts); asserts exit 0; returns its stderr."""
    p = subprocess.run([*cmd, "--until-caught-up"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
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
    assert_rollups_exact(dsn)




# The analytics views as the original defined them, over the table: what the rollups must equal.
_FROM_TABLE = {
    "daily_funnel": (
        "SELECT event_timestamp::date AS day, count(*) FILTER (WHERE event_type = 'PAGE_VIEW'), "
        "count(*) FILTER (WHERE event_type = 'ADD_TO_CART'), count(*) FILTER (WHERE event_type = 'PURCHASE') "
        "FROM kafka_events_silver WHERE event_timestamp IS NOT NULL GROUP BY 1 ORDER BY 1",
        "SELECT day, page_views, add_to_carts, purchases FROM daily_funnel "
        "WHERE page_views + add_to_carts + purchases > 0 ORDER BY 1"),
    "daily_revenue": (
        "SELECT event_timestamp::date, currency, count(*), sum(amount), round(avg(amount), 2) "
        "FROM kafka_events_silver WHERE event_type = 'PURCHASE' GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT day, currency, purchases, revenue, average_order FROM daily_revenue ORDER BY 1, 2"),
    "top_customers": (
        "SELECT customer_id, currency, count(*) FILTER (WHERE event_type = 'PURCHASE'), "
        "coalesce(sum(amount) FILTER (WHERE event_type = 'PURCHASE'), 0), count(*), max(event_timestamp) "
        "FROM kafka_events_silver GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT customer_id, currency, purchases, revenue, events, last_seen FROM top_customers ORDER BY 1, 2"),
}


def assert_rollups_exact(dsn: str) -> None:
    """The views (which read the rollups the loader keeps) equal the same aggregates computed from the
    table's rows: nothing counted twice, nothing missed."""
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as c:
        for view, (from_table, from_view) in _FROM_TABLE.items():
            c.execute(from_table)
            want = c.fetchall()
            c.execute(from_view)
            got = c.fetchall()
            assert got == want, f"{view}: {len(got)} rows from the rollups, {len(want)} from the table; " \
                                f"first difference: {next((g, w) for g, w in zip(got + [None] * len(want), want + [None] * len(got)) if g != w)}"
