"""History at day-one speed, on the real broker and PostgreSQL: the table partitioned by event day, the
rollups the views read kept exact by the loader, upgrades that keep every row, retention that drops whole
partitions and keeps the rollups, and a rebuild of the rollups from the table."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg2
from confluent_kafka import Producer

import ecomlogs
from helpers import ROOT, assert_rollups_exact, loader_cmd, run_until_caught_up, unique

TODAY = datetime.now(timezone.utc).date()


def _fetch(dsn: str, sql: str, params: Any = None) -> list[tuple]:
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as c:
        c.execute(sql, params)
        return c.fetchall() if c.description else []


def _partition_days(dsn: str) -> set[date]:
    rows = _fetch(dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = 'kafka_events_silver'::regclass")
    return {datetime.strptime(r[0][-8:], "%Y%m%d").date() for r in rows if r[0][-8:].isdigit()}


def _events(days: list[date], per_day: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    """Clean events (canonical JSON fields) on the given days, a few customers, every type."""
    out = []
    kinds = ["PAGE_VIEW", "PAGE_VIEW", "ADD_TO_CART", "PURCHASE"]
    for d in days:
        for i in range(per_day):
            ts = datetime(d.year, d.month, d.day, (i * 7) % 24, i % 60, (i * 13) % 60)
            out.append({"event_id": str(uuid.UUID(int=hash((seed, d, i)) & (2**128 - 1))),
                        "customer_id": f"CUST-{i % 5:05d}", "event_type": kinds[i % 4],
                        "amount": round(1 + (i * 37 % 5000) / 100, 2), "currency": ["USD", "EUR", "GBP"][i % 3],
                        "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "is_valid": True})
    return out


def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    ecomlogs.ensure_topics([topic], bootstrap_servers=bootstrap)
    p = Producer({"bootstrap.servers": bootstrap})
    for e in events:
        p.produce(topic, key=e["customer_id"].encode(), value=json.dumps(e).encode())
    assert p.flush(60) == 0


def _load(bootstrap: str, topic: str, db: str, group: str, *extra: str) -> str:
    return run_until_caught_up(loader_cmd(bootstrap, topic, db, group, *extra))


def test_a_fresh_database_is_partitioned_by_day_with_partitions_ahead(db: str) -> None:
    ecomlogs.migrate(db)
    assert _fetch(db, "SELECT relkind FROM pg_class WHERE relname = 'kafka_events_silver'") == [("p",)]
    assert _fetch(db, "SELECT to_regclass('kafka_events_silver_default') IS NOT NULL") == [(True,)]
    assert {TODAY + timedelta(days=d) for d in range(-1, 8)} <= _partition_days(db)
    # The key that stores each event once holds the partition key.
    assert _fetch(db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                      "WHERE conname = 'kafka_events_silver_event_key'") == [("UNIQUE (event_timestamp, event_id)",)]


def test_a_day_gets_its_partition_on_demand_and_far_days_land_in_the_default_one(kafka_bootstrap: str,
                                                                                db: str) -> None:
    month_ago, far = TODAY - timedelta(days=30), date(1000, 6, 1)
    events = _events([month_ago, far, TODAY])
    topic = unique("clean")
    _produce(kafka_bootstrap, topic, events)
    out = _load(kafka_bootstrap, topic, db, unique("g"))
    assert f"loaded {len(events):,} rows" in out, out[-2000:]
    assert month_ago in _partition_days(db) and far not in _partition_days(db)
    assert _fetch(db, "SELECT count(*) FROM kafka_events_silver_default") == [(40,)]
    assert _fetch(db, f"SELECT count(*) FROM kafka_events_silver_{month_ago:%Y%m%d}") == [(40,)]
    assert _fetch(db, "SELECT count(*) FROM kafka_events_silver") == [(len(events),)]
    assert_rollups_exact(db)


def test_redelivered_events_add_nothing_to_the_rollups(kafka_bootstrap: str, db: str) -> None:
    events = _events([TODAY - timedelta(days=2), TODAY], seed=1)
    topic, group = unique("clean"), unique("g")
    _produce(kafka_bootstrap, topic, events)
    _load(kafka_bootstrap, topic, db, group)
    funnel = _fetch(db, "SELECT * FROM daily_funnel ORDER BY day")
    # The same events again (a producer's retry, a replay): skipped, and the views do not move.
    _produce(kafka_bootstrap, topic, events[:50] + events)
    out = _load(kafka_bootstrap, topic, db, group)
    assert "loaded 0 rows" in out and f"{len(events) + 50:,} duplicates skipped" in out, out[-2000:]
    assert _fetch(db, "SELECT * FROM daily_funnel ORDER BY day") == funnel
    assert_rollups_exact(db)


ORIGINAL_DDL = """CREATE TABLE kafka_events_silver (
    id SERIAL PRIMARY KEY, event_id VARCHAR(255) NOT NULL, customer_id VARCHAR(255), event_type VARCHAR(50),
    amount DECIMAL(10, 2), currency VARCHAR(10), event_timestamp TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"""


def _insert(db: str, events: list[dict[str, Any]]) -> None:
    with psycopg2.connect(db, connect_timeout=10) as conn, conn.cursor() as c:
        c.executemany("INSERT INTO kafka_events_silver (event_id, customer_id, event_type, amount, currency, "
                      "event_timestamp) VALUES (%(event_id)s, %(customer_id)s, %(event_type)s, %(amount)s, "
                      "%(currency)s, %(timestamp)s)", events)


def test_an_original_table_upgrades_keeping_every_row_and_the_rollups_cover_it(db: str) -> None:
    days = [TODAY - timedelta(days=d) for d in (60, 12, 1, 0)]
    events = _events(days, per_day=250, seed=2)
    _fetch(db, ORIGINAL_DDL)
    _insert(db, events)
    before = _fetch(db, "SELECT id, event_id, customer_id, event_type, amount, currency, event_timestamp, "
                        "created_at FROM kafka_events_silver ORDER BY id")
    p = subprocess.run([sys.executable, "-m", "ecomlogs", "migrate", "--dsn", db], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    # It says what it will do and how long it takes, then how far it got.
    assert f"upgrading kafka_events_silver: {len(events):,} rows over 4 days move into daily partitions" in p.stderr
    assert "about " in p.stderr and f"moved {len(events):,} of {len(events):,} rows (100%)" in p.stderr, p.stderr
    after = _fetch(db, "SELECT id, event_id, customer_id, event_type, amount, currency, event_timestamp, "
                       "created_at FROM kafka_events_silver ORDER BY id")
    assert after == before, "every row, with its id and every column, is kept"
    assert set(days) <= _partition_days(db)
    assert _fetch(db, "SELECT to_regclass('kafka_events_silver_unpartitioned')") == [(None,)]
    assert_rollups_exact(db)
    # New rows continue the ids.
    assert _fetch(db, "SELECT nextval('kafka_events_silver_id_seq')")[0][0] > max(r[0] for r in before)


def test_an_earlier_ecomlogs_database_upgrades_too(db: str) -> None:
    """A database at migration 0005 (unpartitioned, with the unique event_id and the views over the table)."""
    with psycopg2.connect(db, connect_timeout=10) as conn, conn.cursor() as c:
        c.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, name TEXT NOT NULL, "
                  "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for version, name, sql in ecomlogs._core.migrations():
            if version <= "0005":
                c.execute(sql)
                c.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
    events = _events([TODAY - timedelta(days=5), TODAY], per_day=100, seed=3)
    _insert(db, events)
    assert ecomlogs.migrate(db) == ["0006", "0007"]
    assert _fetch(db, "SELECT count(*), count(DISTINCT event_id) FROM kafka_events_silver") == [(200, 200)]
    assert_rollups_exact(db)


def test_retention_drops_old_partitions_and_the_rollups_keep_counting_them(kafka_bootstrap: str, db: str) -> None:
    old = [TODAY - timedelta(days=40), TODAY - timedelta(days=35)]
    events = _events([*old, TODAY - timedelta(days=3), TODAY], seed=4)
    topic = unique("clean")
    _produce(kafka_bootstrap, topic, events)
    _load(kafka_bootstrap, topic, db, unique("g"))
    views = {v: _fetch(db, f"SELECT * FROM {v} ORDER BY 1, 2") for v in ("daily_funnel", "daily_revenue",
                                                                         "top_customers")}
    cli = [sys.executable, "-m", "ecomlogs", "retention", "--dsn", db, "--keep", "30"]
    dry = subprocess.run([*cli, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "would drop 2 daily partitions (80 rows)" in dry.stderr, dry.stderr
    assert set(old) <= _partition_days(db)
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "dropped 2 daily partitions (80 rows)" in done.stderr, done.stderr
    assert f"dropped kafka_events_silver_{old[0]:%Y%m%d} (40 rows of {old[0]})" in done.stderr, done.stderr
    assert not set(old) & _partition_days(db)
    assert _fetch(db, "SELECT count(*) FROM kafka_events_silver") == [(len(events) - 80,)]
    # The daily views still show the dropped days; customer totals still hold them; a rebuild keeps that.
    for v, rows in views.items():
        assert _fetch(db, f"SELECT * FROM {v} ORDER BY 1, 2") == rows, v
    assert ecomlogs.rebuild_rollups(db)[1] > 0
    for v, rows in views.items():
        assert _fetch(db, f"SELECT * FROM {v} ORDER BY 1, 2") == rows, v
    assert ecomlogs.retention(30, dsn=db) == []  # nothing left to drop


def test_the_loader_keeps_a_retention(kafka_bootstrap: str, db: str) -> None:
    old = TODAY - timedelta(days=20)
    topic, group = unique("clean"), unique("g")
    _produce(kafka_bootstrap, topic, _events([old, TODAY], seed=5))
    _load(kafka_bootstrap, topic, db, group)
    assert old in _partition_days(db)
    out = _load(kafka_bootstrap, topic, db, group, "--retention-days", "10")
    assert old not in _partition_days(db), out[-2000:]
    assert f"dropped kafka_events_silver_{old:%Y%m%d}" in out
    assert _fetch(db, "SELECT sum(events) FROM ecomlogs_daily_rollup") == [(80,)]


def test_a_manual_edit_is_repaired_by_a_rebuild(kafka_bootstrap: str, db: str) -> None:
    topic = unique("clean")
    _produce(kafka_bootstrap, topic, _events([TODAY - timedelta(days=1), TODAY], seed=6))
    _load(kafka_bootstrap, topic, db, unique("g"))
    _fetch(db, "DELETE FROM kafka_events_silver WHERE event_type = 'PURCHASE' AND currency = 'EUR'")
    p = subprocess.run([sys.executable, "-m", "ecomlogs", "rebuild-rollups", "--dsn", db], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "rebuilt the rollups of" in p.stderr, p.stderr
    assert_rollups_exact(db)
