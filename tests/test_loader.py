"""psqlConsumer.py against the real broker and the real PostgreSQL: each valid event becomes exactly one
row with exact values, whatever crashes, outages and rebalances happen."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import ecomlogs
from helpers import (assert_exact, finish, loader_cmd, produce_clean, read_all, row_count, rows, run_until_caught_up,
                     start, unique, wait_for, wait_group_empty)

ROOT = Path(__file__).resolve().parent.parent


def test_pipeline_rows_equal_valid_events_exactly(kafka_bootstrap: str, db: str) -> None:
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 20_000, seed=21)
    out = run_until_caught_up(loader_cmd(kafka_bootstrap, clean, db, unique("g"), "--batch-size", "500"))
    assert f"loaded {len(expected):,} rows" in out, out[-2000:]
    assert_exact(db, expected)
    # Analytics views answer from the same rows.
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT sum(page_views + add_to_carts + purchases) FROM daily_funnel")
        assert c.fetchone()[0] == len(expected)
        c.execute("SELECT sum(purchases) FROM daily_revenue")
        assert c.fetchone()[0] == sum(e["event_type"] == "PURCHASE" for e in expected.values())
        c.execute("SELECT count(*) FROM top_customers WHERE revenue_rank = 1")
        assert c.fetchone()[0] >= 1


def test_redelivered_events_are_skipped_not_errors(kafka_bootstrap: str, db: str) -> None:
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 4000, seed=22)
    # Redeliver every event again (as an at-least-once upstream would) into the same topic.
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for e in list(expected.values())[:1500]:
        p.produce(clean, value=json.dumps(e).encode(), key=e["customer_id"].encode())
    assert p.flush(60) == 0
    out = run_until_caught_up(loader_cmd(kafka_bootstrap, clean, db, unique("g"), "--batch-size", "700"))
    assert "1,500 duplicates skipped" in out, out[-2000:]
    assert_exact(db, expected)


@pytest.mark.parametrize("workers", [1, 3])
def test_kill_9_five_times_still_exactly_once(kafka_bootstrap: str, db: str, workers: int) -> None:
    clean, group = unique("clean"), unique("g")
    expected = produce_clean(kafka_bootstrap, clean, 200_000, seed=23)
    cmd = loader_cmd(kafka_bootstrap, clean, db, group, "--batch-size", "2000", "--quiet",
                     "--workers", str(workers))
    rng = random.Random(23)
    for _ in range(5):
        proc = start(cmd, capture=False)
        time.sleep(rng.uniform(2.5, 6.0))  # the group join takes ~3 s: kills land before and during loading
        finish(proc, signal.SIGKILL, timeout=30)
    # The killed member stays in the group until its session times out (6 s); until then a new one would
    # own only some partitions.
    wait_group_empty(kafka_bootstrap, group)
    run_until_caught_up(cmd)
    assert_exact(db, expected)


def test_postgres_down_for_10_seconds(kafka_bootstrap: str, private_pg: Any) -> None:
    clean, group, db = unique("clean"), unique("g"), private_pg.dsn
    expected = produce_clean(kafka_bootstrap, clean, 300_000, seed=24)
    ecomlogs.migrate(db)
    cmd = loader_cmd(kafka_bootstrap, clean, db, group, "--batch-size", "1000")
    proc = start([*cmd, "--until-caught-up"])
    try:
        wait_for("the loader to store 5,000 rows", lambda: row_count(db) >= 5000)
        private_pg.stop(timeout=30)
        time.sleep(10)  # the outage itself
    finally:
        private_pg.start(timeout=60)  # also when an assertion above failed
    code, err = finish(proc)
    assert code == 0, err[-3000:]
    assert "PostgreSQL unavailable" in err and "retrying in" in err
    assert "database retries" in err
    assert_exact(db, expected)


def test_partial_batch_is_written_once_the_topic_goes_quiet(kafka_bootstrap: str, db: str) -> None:
    """A trickle smaller than a batch must not wait for the flush interval (here 10 minutes)."""
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 400, seed=28)
    cmd = [*loader_cmd(kafka_bootstrap, clean, db, unique("g"), "--batch-size", "50000",
                       "--flush-interval-ms", "600000"), "--until-idle", "120"]
    proc = start(cmd)
    try:
        # A group join (~3 s) plus the 50 ms quiet gap, with room.
        wait_for("the trickle to reach the table", lambda: row_count(db) >= len(expected) or proc.poll() is not None)
        assert proc.poll() is None, "the loader exited instead of writing while running"
        assert_exact(db, expected)
    finally:
        code, err = finish(proc, signal.SIGTERM, timeout=60)
    assert code == 0, err[-3000:]


def test_loader_workers_share_partitions_exactly_once(kafka_bootstrap: str, db: str) -> None:
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 30_000, seed=29)
    stats = ecomlogs.load(bootstrap_servers=kafka_bootstrap, topic=clean, group_id=unique("g"), dsn=db,
                          dlq_topic=unique("dlq"), batch_size=1000, until_caught_up=True, workers=3)
    assert stats.rows_inserted == len(expected) and stats.consumed == len(expected)
    assert stats.duplicates_skipped == 0 and stats.dead_lettered == 0
    assert_exact(db, expected)
    # Each partition's next offset is stored once, by whichever worker owned it.
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT partition, next_offset FROM ecomlogs_kafka_offsets WHERE topic = %s", (clean,))
        stored = dict(c.fetchall())
    assert sorted(stored) == [0, 1, 2] and sum(stored.values()) == len(expected)


def test_two_loaders_in_one_group_exactly_once_across_rebalances(kafka_bootstrap: str, db: str) -> None:
    clean, group = unique("clean"), unique("g")
    expected = produce_clean(kafka_bootstrap, clean, 200_000, seed=25)
    cmd = [*loader_cmd(kafka_bootstrap, clean, db, group, "--batch-size", "1000"), "--until-caught-up"]
    a = start(cmd)
    # The first one is loading when the second one arrives: a rebalance mid-load. Once it has stored rows,
    # its next batch waits for a lock on the daily rollup until the second loader has started consuming,
    # so the second one joins while the first still has most of the topic to load, however fast it is.
    wait_for("the first loader to store rows", lambda: row_count(db) > 0)
    hold = psycopg2.connect(db, connect_timeout=10)
    with tempfile.TemporaryFile("w+") as b_err:
        try:
            with hold.cursor() as c:
                c.execute("LOCK TABLE ecomlogs_daily_rollup IN EXCLUSIVE MODE")
            b = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=b_err, text=True)

            def b_consuming() -> bool:
                b_err.seek(0)
                return "loading " in b_err.read() or b.poll() is not None

            wait_for("the second loader to start consuming", b_consuming)
        finally:
            hold.rollback()
            hold.close()
        errs = []
        for p in (a, b):
            code, e = finish(p)
            if p is b:
                b_err.seek(0)
                e = b_err.read()
            assert code == 0, e[-3000:]
            errs.append(e)
    assert any("revoked" in e for e in errs)
    assert all("loaded" in e for e in errs)
    assert_exact(db, expected)


def test_rejected_row_goes_to_dlq_with_sqlstate_and_the_rest_loads(kafka_bootstrap: str, db: str) -> None:
    clean, dlq = unique("clean"), unique("dlq")
    expected = produce_clean(kafka_bootstrap, clean, 3000, seed=26)
    ecomlogs.migrate(db)
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("ALTER TABLE kafka_events_silver ADD CONSTRAINT amount_cap CHECK (amount < 1000)")
    stats = ecomlogs.load(bootstrap_servers=kafka_bootstrap, topic=clean, dsn=db, group_id=unique("g"),
                          dlq_topic=dlq, batch_size=500, until_caught_up=True)
    too_big = {k for k, e in expected.items() if Decimal(str(e["amount"])) >= 1000}
    assert too_big, "the seed should give some amounts over 1000"
    assert stats.dead_lettered == len(too_big) and stats.by_reason == {"database_rejected": len(too_big)}
    assert stats.rows_inserted == len(expected) - len(too_big)
    assert {r[0] for r in rows(db)} == set(expected) - too_big
    letters = read_all(kafka_bootstrap, dlq, expected=len(too_big))
    assert {json.loads(m.value())["event_id"] for m in letters} == too_big
    for m in letters:
        # The event as the processor wrote it (the loader keeps rows as COPY tuples and decodes this one).
        event = json.loads(m.value())
        assert event == expected[event["event_id"]] and m.key().decode() == event["customer_id"]
        h = {k: v.decode() for k, v in m.headers()}
        assert h["reason"] == "database_rejected" and h["sqlstate"] == "23514" and h["stage"] == "loader"
        assert "amount_cap" in h["detail"] and h["source.topic"] == clean and int(h["source.offset"]) >= 0


def test_rejected_rows_and_duplicates_in_the_same_batches(kafka_bootstrap: str, db: str) -> None:
    """Batches that hit both the unique key (rows already stored) and a CHECK constraint: each refused row is
    dead-lettered with its SQLSTATE, each stored one skipped, every other row inserted, in one pass."""
    clean, dlq = unique("clean"), unique("dlq")
    expected = produce_clean(kafka_bootstrap, clean, 4000, seed=28)
    bad = {k for k in expected if k.endswith("f")}  # about 1 row in 16
    stored_before = sorted(set(expected) - bad)[::5]
    ecomlogs.migrate(db)
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        for k in stored_before:
            e = expected[k]
            c.execute("INSERT INTO kafka_events_silver (event_id, customer_id, event_type, amount, currency,"
                      " event_timestamp) VALUES (%s, %s, %s, %s, %s, %s)",
                      (k, e["customer_id"], e["event_type"], e["amount"], e["currency"], e["timestamp"]))
        c.execute("ALTER TABLE kafka_events_silver ADD CONSTRAINT no_f CHECK (right(event_id, 1) <> 'f')")
    ecomlogs.rebuild_rollups(db)  # rows written by hand, not by the loader
    stats = ecomlogs.load(bootstrap_servers=kafka_bootstrap, topic=clean, dsn=db, group_id=unique("g"),
                          dlq_topic=dlq, batch_size=1000, until_caught_up=True)
    assert bad and stored_before
    assert stats.dead_lettered == len(bad) and stats.by_reason == {"database_rejected": len(bad)}
    assert stats.duplicates_skipped == len(stored_before)
    assert stats.rows_inserted == len(expected) - len(bad) - len(stored_before)
    assert_exact(db, {k: e for k, e in expected.items() if k not in bad})
    letters = read_all(kafka_bootstrap, dlq, expected=len(bad))
    assert sorted(json.loads(m.value())["event_id"] for m in letters) == sorted(bad)
    assert all(dict(m.headers())["sqlstate"] == b"23514" for m in letters)


def test_each_batch_is_stored_in_key_order(kafka_bootstrap: str, db: str) -> None:
    # Sorted batches sweep the unique index once (see README, Speed): within a batch, ids ascend with the
    # key (event_timestamp, event_id).
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 8000, seed=27)
    stats = ecomlogs.load(bootstrap_servers=kafka_bootstrap, topic=clean, dsn=db, group_id=unique("g"),
                          dlq_topic=unique("dlq"), batch_size=1000, until_caught_up=True)
    assert stats.rows_inserted == len(expected) and stats.batches >= len(expected) // 1000
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT event_timestamp, event_id FROM kafka_events_silver ORDER BY id")
        keys = [(ts, i.encode()) for ts, i in c.fetchall()]
    assert set(k[1].decode() for k in keys) == set(expected)
    descents = sum(b < a for a, b in zip(keys, keys[1:]))
    # Each batch is one ascending run; arrival order would descend about every other row.
    assert descents < stats.batches, (descents, stats.batches)


def test_migrations_twice_and_concurrently(db: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ecomlogs.migrate(db)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert ecomlogs.migrate(db) == []
    versions = [r["version"] for r in ecomlogs.query("SELECT version FROM schema_migrations ORDER BY 1", dsn=db)]
    assert versions == [v for v, _n, _s in ecomlogs._core.migrations()]
    cols = ecomlogs.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'kafka_events_silver' ORDER BY ordinal_position", dsn=db)
    assert [(c["column_name"], c["data_type"]) for c in cols] == [
        ("id", "integer"), ("event_id", "character varying"), ("customer_id", "character varying"),
        ("event_type", "character varying"), ("amount", "numeric"), ("currency", "character varying"),
        ("event_timestamp", "timestamp without time zone"), ("created_at", "timestamp without time zone")]


def test_unreachable_database_is_one_readable_line(kafka_bootstrap: str) -> None:
    p = subprocess.run([sys.executable, "psqlConsumer.py", "--dsn", "postgresql://postgres@127.0.0.1:1/x",
                        "--bootstrap-servers", kafka_bootstrap], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "error:" in last and "127.0.0.1:1" in last


class _CommitCutter:
    """A TCP proxy in front of PostgreSQL that drops the connection once, right after the server has
    committed a batch (its CommandComplete for COMMIT, on a connection that ran a COPY) and before the
    client hears so: a commit whose outcome the client cannot know."""

    COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            server.settimeout(None)
            copied = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, copied, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, copied, True), daemon=True).start()

    def _pump(self, src: Any, dst: Any, copied: threading.Event, from_server: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not from_server and b"COPY " in data:
                    copied.set()
                if from_server and copied.is_set() and not self.cut.is_set() and self.COMMIT_DONE in data:
                    self.cut.set()
                    dst.sendall(data[:data.index(self.COMMIT_DONE)])
                    break
                dst.sendall(data)
        except OSError:
            pass
        import socket

        for s in (src, dst):  # shutdown first: it wakes the other direction's blocked recv
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_commit_whose_answer_is_lost_is_counted_once(kafka_bootstrap: str, db: str, workers: int) -> None:
    """The loader's summary equals what the table gained even when the connection drops between the
    server's commit and its answer: the loader asks PostgreSQL (the batch's stored offsets) instead of
    writing the batch again and counting its rows as duplicates."""
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 8000, seed=29)
    ecomlogs.migrate(db)
    port = int(db.rsplit(":", 1)[1].split("/", 1)[0])
    cutter = _CommitCutter(port)
    try:
        via = db.replace(f":{port}/", f":{cutter.port}/") + "?sslmode=disable"
        cmd = loader_cmd(kafka_bootstrap, clean, via, unique("g"), "--batch-size", "1000", "--workers", str(workers))
        out = run_until_caught_up(cmd)
    finally:
        cutter.close()
    assert cutter.cut.is_set(), "the proxy never saw a batch commit"
    assert "had been stored: not written again" in out, out[-3000:]
    assert f"loaded {len(expected):,} rows" in out and "0 duplicates skipped" in out, out[-3000:]
    assert_exact(db, expected)
