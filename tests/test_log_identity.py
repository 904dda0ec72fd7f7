"""The loader trusts only PostgreSQL for where to start, checks that the log it resumes is the one it read,
and tells an outage from a fault: nothing is ever skipped silently (real broker, real PostgreSQL)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import Any

import psycopg2
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

import ecomlogs
from helpers import ROOT, finish, read_all, start, unique, wait_for

pytestmark = pytest.mark.timeout(300)


def feed(bootstrap: str, topic: str, n: int, seed: int) -> None:
    """n valid events straight into a (clean) topic: the loader validates what it reads anyway."""
    stats = ecomlogs.produce(n, bootstrap_servers=bootstrap, topic=topic, seed=seed, invalid_ratio=0.0)
    assert stats.delivered == n


def load(bootstrap: str, topic: str, group: str, dsn: str, **kw: Any) -> ecomlogs.types.LoadStats:
    return ecomlogs.load(bootstrap_servers=bootstrap, topic=topic, group_id=group, dsn=dsn,
                         dlq_topic=unique("dlq"), until_caught_up=True, batch_size=5000, **kw)


def count(dsn: str) -> tuple[int, int]:
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as c:
        c.execute("SELECT count(*), count(DISTINCT event_id) FROM kafka_events_silver")
        return c.fetchone()


def recreate(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics([topic], operation_timeout=15).values():
        f.result(30)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} was not deleted"
        time.sleep(0.1)
    ecomlogs.ensure_topics([topic], bootstrap_servers=bootstrap)


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ecomlogs.loader" and r.levelno == logging.WARNING and text in r.getMessage()]


def test_recreated_topic_whose_new_log_outgrew_the_old_offsets_is_loaded_whole(
        kafka_bootstrap: str, db: str, caplog: pytest.LogCaptureFixture) -> None:
    clean, group = unique("clean"), unique("g")
    feed(kafka_bootstrap, clean, 30_000, seed=101)
    assert load(kafka_bootstrap, clean, group, db).rows_inserted == 30_000
    recreate(kafka_bootstrap, clean)
    # The new log (20k per partition) is longer than the stored offsets (about 10k): the subtle case.
    feed(kafka_bootstrap, clean, 60_000, seed=102)
    stats = load(kafka_bootstrap, clean, group, db)
    assert stats.rows_inserted == 60_000 and stats.log_resets == 3
    assert count(db) == (90_000, 90_000)
    found = warnings_of(caplog, "re-created")
    assert len(found) == 3, found  # one WARNING per partition, with the old offset and the new log
    assert all("stored offset" in w and "from the beginning" in w for w in found)
    # The next start resumes normally: nothing re-read, nothing warned.
    caplog.clear()
    again = load(kafka_bootstrap, clean, group, db)
    assert again.consumed == 0 and again.log_resets == 0 and not warnings_of(caplog, "")


def test_reset_log_is_caught_by_the_record_fingerprint_where_no_topic_id_helps(
        kafka_bootstrap: str, db: str, caplog: pytest.LogCaptureFixture) -> None:
    """As on a broker that reports no topic IDs (or a row stored before they were recorded): the check
    rests on the record before the stored offset, for a longer and for a shorter new log."""
    clean, group = unique("clean"), unique("g")

    def forget_topic_id() -> None:
        with psycopg2.connect(db) as conn, conn.cursor() as c:
            c.execute("UPDATE ecomlogs_kafka_offsets SET topic_id = NULL")
            assert c.rowcount == 3

    feed(kafka_bootstrap, clean, 30_000, seed=103)
    assert load(kafka_bootstrap, clean, group, db).rows_inserted == 30_000
    forget_topic_id()
    recreate(kafka_bootstrap, clean)
    feed(kafka_bootstrap, clean, 60_000, seed=104)  # longer: a different record sits at the old offset
    assert load(kafka_bootstrap, clean, group, db).log_resets == 3
    assert len(warnings_of(caplog, "is not the one that was loaded")) == 3
    forget_topic_id()
    recreate(kafka_bootstrap, clean)
    feed(kafka_bootstrap, clean, 3_000, seed=105)  # shorter: no record at the old offset at all
    caplog.clear()
    stats = load(kafka_bootstrap, clean, group, db)
    assert stats.rows_inserted == 3_000 and stats.log_resets == 3
    assert len(warnings_of(caplog, "has no record before the stored offset")) == 3
    assert count(db) == (93_000, 93_000)


def test_same_log_resumes_where_it_stopped(kafka_bootstrap: str, db: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    clean, group = unique("clean"), unique("g")
    feed(kafka_bootstrap, clean, 9_000, seed=106)
    assert load(kafka_bootstrap, clean, group, db).rows_inserted == 9_000
    feed(kafka_bootstrap, clean, 6_000, seed=107)
    stats = load(kafka_bootstrap, clean, group, db)
    # Only the new records are read: the stored offsets were checked and trusted.
    assert stats.consumed == 6_000 and stats.rows_inserted == 6_000 and stats.duplicates_skipped == 0
    assert stats.log_resets == 0 and not warnings_of(caplog, "")
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT count(*) FROM ecomlogs_kafka_offsets WHERE last_hash IS NOT NULL "
                  "AND topic_id IS NOT NULL AND log_restarts = 0")
        assert c.fetchone()[0] == 3


def test_a_fresh_database_for_an_existing_group_loads_everything(
        kafka_bootstrap: str, db: str, dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL holds no offsets (new database, restored backup): the group's Kafka commit, which only
    says how far another database got, must not make the loader skip anything."""
    clean, group = unique("clean"), unique("g")
    feed(kafka_bootstrap, clean, 10_000, seed=108)
    first = dsn.rsplit("/", 1)[0] + "/" + unique("t")
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {first.rsplit('/', 1)[1]}")
    try:
        assert load(kafka_bootstrap, clean, group, first).rows_inserted == 10_000  # commits to Kafka too
        caplog.set_level(logging.INFO, logger="ecomlogs.kafka")
        ecomlogs._core.reset_log_cache()  # the Rust side caches logger levels
        stats = load(kafka_bootstrap, clean, group, db)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {first.rsplit('/', 1)[1]} WITH (FORCE)")
        admin.close()
    assert stats.rows_inserted == 10_000 and count(db) == (10_000, 10_000)
    assigned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("assigned")]
    assert assigned and "no offset stored in PostgreSQL" in assigned[-1], assigned


def _loader(bootstrap: str, topic: str, dsn: str, dlq: str, *extra: str) -> list[str]:
    return [sys.executable, "psqlConsumer.py", "--bootstrap-servers", bootstrap, "--topic", topic, "--dsn", dsn,
            "--group-id", unique("g"), "--dlq-topic", dlq, *extra]


def _assert_fault(code: int, err: str, sqlstate: str, words: str) -> None:
    assert code == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert f"SQLSTATE {sqlstate}" in last and words in last, err[-3000:]
    assert "Traceback" not in err and "retrying" not in err and "unavailable" not in err


def test_missing_schema_is_a_fault_not_an_outage(kafka_bootstrap: str, db: str) -> None:
    clean, dlq = unique("clean"), unique("dlq")
    feed(kafka_bootstrap, clean, 100, seed=109)
    t0 = time.monotonic()
    p = subprocess.run([*_loader(kafka_bootstrap, clean, db, dlq, "--no-migrate"), "--until-caught-up"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 20
    _assert_fault(p.returncode, p.stderr, "42P01", "ecomlogs migrate")


def test_a_role_without_insert_is_a_fault_at_start_and_mid_run(kafka_bootstrap: str, db: str) -> None:
    """Permission denied never clears by waiting: one line with the SQLSTATE and the server's message,
    exit 1, nothing dead-lettered, no offsets stored (at start-up, and when revoked while loading)."""
    clean, dlq = unique("clean"), unique("dlq")
    role = unique("loader_role")
    ecomlogs.migrate(db)
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        c.execute(f"GRANT SELECT, INSERT, UPDATE ON ecomlogs_kafka_offsets TO {role}")
    as_role = db.replace("postgres@", f"{role}@", 1)
    try:
        feed(kafka_bootstrap, clean, 2_000, seed=110)
        p = subprocess.run([*_loader(kafka_bootstrap, clean, as_role, dlq), "--until-caught-up"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        _assert_fault(p.returncode, p.stderr, "42501", "permission denied for table kafka_events_silver")
        # Granted at start, revoked while loading: the batch in flight fails for good, it is not an outage
        # and its rows are not the database "rejecting" them one by one.
        with psycopg2.connect(db) as conn, conn.cursor() as c:
            c.execute(f"GRANT INSERT ON kafka_events_silver TO {role}")
            c.execute(f"GRANT INSERT, UPDATE ON ecomlogs_daily_rollup, ecomlogs_customer_rollup TO {role}")
            c.execute(f"GRANT INSERT, UPDATE, DELETE ON ecomlogs_customer_deltas TO {role}")
            c.execute(f"GRANT USAGE ON SEQUENCE ecomlogs_customer_deltas_id_seq TO {role}")
            c.execute(f"GRANT USAGE ON SEQUENCE kafka_events_silver_id_seq TO {role}")
        proc = start([*_loader(kafka_bootstrap, clean, as_role, dlq, "--batch-size", "500"), "--until-idle", "60"])
        wait_for("the first 2,000 rows", lambda: count(db)[0] >= 2_000)
        assert count(db)[0] == 2_000
        with psycopg2.connect(db) as conn, conn.cursor() as c:
            c.execute(f"REVOKE INSERT ON kafka_events_silver FROM {role}")
            c.execute("SELECT coalesce(sum(next_offset), 0) FROM ecomlogs_kafka_offsets")
            stored_before = c.fetchone()[0]
        feed(kafka_bootstrap, clean, 1_000, seed=111)
        code, err = finish(proc, timeout=60)
        _assert_fault(code, err, "42501", "permission denied for table kafka_events_silver")
        with psycopg2.connect(db) as conn, conn.cursor() as c:
            c.execute("SELECT coalesce(sum(next_offset), 0) FROM ecomlogs_kafka_offsets")
            assert c.fetchone()[0] == stored_before == 2_000  # the failed batch stored no offsets
        assert count(db) == (2_000, 2_000)
        assert read_all(kafka_bootstrap, dlq, timeout_s=10) == []  # nothing dead-lettered
    finally:
        with psycopg2.connect(db) as conn, conn.cursor() as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


def test_timestamps_outside_years_1_to_9999_are_dead_lettered_and_the_rest_reads_back(
        kafka_bootstrap: str, db: str) -> None:
    clean, dlq = unique("clean"), unique("dlq")
    ecomlogs.ensure_topics([clean], bootstrap_servers=kafka_bootstrap)
    base = {"customer_id": "CUST-1", "event_type": "PURCHASE", "amount": 10.5, "currency": "EUR",
            "is_valid": True}
    stamps = {
        "first": ("0001-01-01T00:00:00Z", True),
        "last": ("9999-12-31T23:59:59.999999Z", True),
        "year0": ("0000-12-31T23:00:00Z", False),
        "before1": ("0001-01-01T00:30:00+01:00", False),
        "after9999": ("9999-12-31T23:30:00-01:00", False),
    }
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for name, (ts, _ok) in stamps.items():
        p.produce(clean, key=b"CUST-1", value=json.dumps(dict(base, event_id=name, timestamp=ts)).encode())
    assert p.flush(30) == 0
    stats = ecomlogs.load(bootstrap_servers=kafka_bootstrap, topic=clean, group_id=unique("g"), dsn=db,
                          dlq_topic=dlq, until_caught_up=True)
    assert stats.rows_inserted == 2 and stats.by_reason == {"bad_timestamp": 3}
    # Every stored row reads back through a standard client (psycopg2 fails on year-0 "BC" values).
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT event_id, event_timestamp FROM kafka_events_silver ORDER BY event_timestamp")
        got = c.fetchall()
    assert [(e, t.isoformat()) for e, t in got] == [("first", "0001-01-01T00:00:00"),
                                                    ("last", "9999-12-31T23:59:59.999999")]
    letters = read_all(kafka_bootstrap, dlq, expected=3)
    assert sorted(json.loads(m.value())["event_id"] for m in letters) == ["after9999", "before1", "year0"]
    assert all(dict(m.headers())["reason"] == b"bad_timestamp" for m in letters)


def test_broker_restart_resets_the_log_and_nothing_is_skipped(
        memory_broker: Any, db: str, caplog: pytest.LogCaptureFixture) -> None:
    """The reproduction of the issue: the dev broker keeps topics in memory, so after a restart the
    offsets stored in PostgreSQL point into a log that no longer exists."""
    bs, clean, group = memory_broker.bootstrap_servers, unique("clean"), unique("g")
    feed(bs, clean, 30_000, seed=112)
    assert load(bs, clean, group, db).rows_inserted == 30_000
    memory_broker.restart()
    feed(bs, clean, 60_000, seed=113)
    stats = load(bs, clean, group, db)
    assert stats.rows_inserted == 60_000 and count(db) == (90_000, 90_000)
    assert len(warnings_of(caplog, "from the beginning")) == 3


def test_ecomlogs_run_twice_around_a_broker_restart(memory_broker: Any, db: str) -> None:
    bs = memory_broker.bootstrap_servers

    def run(seed: int) -> int:
        p = subprocess.run([sys.executable, "-m", "ecomlogs", "run", "--count", "20000", "--seed", str(seed),
                            "--bootstrap-servers", bs, "--dsn", db],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stderr[-3000:]
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith("pipeline:"))
        return int(line.split("; ")[1].split()[0].replace(",", ""))

    first = run(114)
    memory_broker.restart()
    second = run(115)
    assert count(db) == (first + second, first + second)
