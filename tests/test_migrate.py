"""Upgrades are all or nothing and say what to do (real PostgreSQL): the migrations run in one transaction,
so a failure anywhere leaves the schema exactly as it was; a table of the original system that holds an
event_id more than once is reported with counts and examples, and `--move-duplicates` moves the extra
copies aside without losing a row; the loader's refusal names the same fix; bad input is exit 2."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import psycopg2
import pytest

import ecomlogs
from helpers import ROOT, unique

pytestmark = pytest.mark.timeout(180)

# The original system's DDL, as its README gives it (no unique key on event_id).
ORIGINAL_DDL = """
CREATE TABLE kafka_events_silver (
    id SERIAL PRIMARY KEY,
    event_id VARCHAR(255) NOT NULL,
    customer_id VARCHAR(255),
    event_type VARCHAR(50),
    amount DECIMAL(10, 2),
    currency VARCHAR(10),
    event_timestamp TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)"""

# Stored in this order, so ids are 1..9: evt-a at 1, 3; evt-b at 2, 5, 7; the others once.
EVENT_IDS = ["evt-a", "evt-b", "evt-a", "evt-c", "evt-b", "evt-d", "evt-b", "evt-e", "evt-f"]
DUPLICATED = {"evt-a": [1, 3], "evt-b": [2, 5, 7]}


def original_table(dsn: str, event_ids: list[str] = EVENT_IDS) -> None:
    """The original system's table with its rows, as its loader left them (duplicates included)."""
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn, conn.cursor() as c:
            c.execute(ORIGINAL_DDL)
            for i, event_id in enumerate(event_ids):
                c.execute(
                    "INSERT INTO kafka_events_silver (event_id, customer_id, event_type, amount, currency,"
                    " event_timestamp) VALUES (%s, %s, 'PURCHASE', %s, 'USD', '2024-05-01 10:00:00'::timestamp"
                    " + %s * interval '1 minute')",
                    (event_id, f"cust-{i % 3}", 10 + i, i),
                )
    finally:
        conn.close()


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn, conn.cursor() as c:
            c.execute(sql)
            return c.fetchall()
    finally:
        conn.close()


def schema(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a migration could change, from the catalogs: relations, columns with their defaults,
    constraints, indexes, view definitions, and the rows of the events table."""
    snapshot = {
        "relations": fetch(dsn, "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
                                " ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1"),
        "columns": fetch(dsn, "SELECT table_name, column_name, data_type, character_maximum_length,"
                              " numeric_precision, numeric_scale, is_nullable, column_default"
                              " FROM information_schema.columns WHERE table_schema = 'public'"
                              " ORDER BY table_name, ordinal_position"),
        "constraints": fetch(dsn, "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                                  " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"),
        "indexes": fetch(dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"),
        "views": fetch(dsn, "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1"),
    }
    if any(name == "kafka_events_silver" for name, _kind in snapshot["relations"]):
        snapshot["rows"] = fetch(dsn, "SELECT * FROM kafka_events_silver ORDER BY id")
    return snapshot


def migrate_cli(dsn: str, *flags: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecomlogs", "migrate", "--dsn", dsn, *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def error_line(p: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The one line a failed command ends with (and the only error line it wrote)."""
    assert p.returncode == exit_code, p.stderr
    assert "Traceback" not in p.stderr and "panicked" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, p.stderr
    assert p.stderr.strip().splitlines()[-1] == errors[0], p.stderr
    return errors[0]


def assert_names_the_duplicates(line: str) -> None:
    assert "SQLSTATE 23505" in line, line
    assert "2 event_ids stored more than once (3 extra rows)" in line, line
    assert '"evt-a" (ids 1, 3)' in line and '"evt-b" (ids 2, 5, 7)' in line, line
    assert "ecomlogs migrate --move-duplicates" in line and "kafka_events_silver_duplicates" in line, line


def test_duplicates_stop_migrate_before_anything_changes(db: str) -> None:
    original_table(db)
    before = schema(db)
    assert ("created_at", "CURRENT_TIMESTAMP") in [(r[1], r[7]) for r in before["columns"]]

    line = error_line(migrate_cli(db), 1)
    assert line.startswith("ecomlogs migrate: error: applying migration 0002_unique_event_id: "), line
    assert_names_the_duplicates(line)
    assert "nothing was changed" in line, line
    # Exactly as before: 0001 (the created_at default) was not kept, no schema_migrations, same rows.
    assert schema(db) == before

    # A dry run says the same and changes nothing either; with --move-duplicates it says what would move.
    assert_names_the_duplicates(error_line(migrate_cli(db, "--dry-run"), 1))
    p = migrate_cli(db, "--dry-run", "--move-duplicates")
    assert p.returncode == 0, p.stderr
    assert "would move 3 extra rows to kafka_events_silver_duplicates" in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("dry run: would apply 0001_kafka_events_silver, "
                                                        "0002_unique_event_id"), p.stderr
    assert schema(db) == before

    # The Python API raises the same, and changes nothing.
    with pytest.raises(ecomlogs.DatabaseError, match="--move-duplicates") as raised:
        ecomlogs.migrate(db)
    assert raised.value.sqlstate == "23505"
    assert schema(db) == before


@pytest.mark.parametrize("via", ["cli", "python"])
def test_move_duplicates_keeps_the_lowest_id_and_loses_no_row(db: str, via: str) -> None:
    original_table(db)
    before = fetch(db, "SELECT * FROM kafka_events_silver ORDER BY id")
    if via == "cli":
        p = migrate_cli(db, "--move-duplicates")
        assert p.returncode == 0, p.stderr
        assert "moved 3 extra rows to kafka_events_silver_duplicates" in p.stderr, p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith("applied 0001_kafka_events_silver, "), p.stderr
    else:
        assert ecomlogs.migrate(db, move_duplicates=True) == [v for v, _n, _s in ecomlogs._core.migrations()]

    kept = fetch(db, "SELECT * FROM kafka_events_silver ORDER BY id")
    moved = fetch(db, "SELECT * FROM kafka_events_silver_duplicates ORDER BY id")
    extra_ids = {i for ids in DUPLICATED.values() for i in ids[1:]}
    # One row per event_id, the lowest id of each; the side table holds exactly the other copies, with
    # every column as it was (plus moved_at); together they are the rows there were.
    assert sorted(r[1] for r in kept) == sorted(set(EVENT_IDS))
    assert [r[0] for r in kept] == [r[0] for r in before if r[0] not in extra_ids]
    assert [r[:-1] for r in moved] == [r for r in before if r[0] in extra_ids]
    assert all(r[-1] is not None for r in moved)
    assert sorted(kept + [r[:-1] for r in moved]) == before

    # The upgrade itself happened: the unique key, the new default, every migration recorded.
    assert fetch(db, "SELECT conname FROM pg_constraint WHERE conname = 'kafka_events_silver_event_key'")
    default = fetch(db, "SELECT column_default FROM information_schema.columns"
                        " WHERE table_name = 'kafka_events_silver' AND column_name = 'created_at'")[0][0]
    assert "'UTC'" in default and "CURRENT_TIMESTAMP" not in default, default
    versions = [r[0] for r in fetch(db, "SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [v for v, _n, _s in ecomlogs._core.migrations()]

    # Again: nothing to do, and the key now refuses a copy with PostgreSQL's DETAIL (which key).
    p = migrate_cli(db)
    assert p.returncode == 0 and p.stderr.strip().splitlines()[-1] == "the schema is up to date", p.stderr
    assert ecomlogs.migrate(db, move_duplicates=True, dry_run=True) == []
    with pytest.raises(ecomlogs.DatabaseError,
                       match=r"DETAIL: Key \(event_timestamp, event_id\)=\(.*, evt-a\) already exists"):
        ecomlogs.query("INSERT INTO kafka_events_silver (event_id, event_timestamp) SELECT event_id, "
                       "event_timestamp FROM kafka_events_silver WHERE event_id = 'evt-a'", dsn=db)


@pytest.mark.parametrize("no_migrate", [True, False], ids=["no-migrate", "migrate-at-start"])
def test_the_loader_refuses_duplicates_naming_the_fix(kafka_bootstrap: str, db: str, no_migrate: bool) -> None:
    original_table(db)
    before = schema(db)
    cmd = [sys.executable, "-m", "ecomlogs", "load", "--bootstrap-servers", kafka_bootstrap, "--dsn", db,
           "--topic", unique("clean"), "--dlq-topic", unique("dlq"), "--group-id", unique("g"), "--until-idle", "1"]
    t0 = time.monotonic()
    p = subprocess.run([*cmd, *(["--no-migrate"] if no_migrate else [])], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert time.monotonic() - t0 < 30, "the refusal comes at start-up, before any record is read"
    line = error_line(p, 1)
    assert line.startswith("ecomlogs load: error: "), line
    assert_names_the_duplicates(line)
    if no_migrate:
        assert "lacks migrations 0001_kafka_events_silver, 0002_unique_event_id" in line, line
    assert schema(db) == before

    # From Python too.
    with pytest.raises(ecomlogs.DatabaseError, match="ecomlogs migrate --move-duplicates"):
        ecomlogs.load(bootstrap_servers=kafka_bootstrap, dsn=db, topic=unique("clean"), dlq_topic=unique("dlq"),
                      group_id=unique("g"), until_idle_s=1, migrate=not no_migrate)
    assert schema(db) == before


@pytest.mark.parametrize("start", ["original-table", "empty-database"])
def test_a_failing_later_migration_rolls_back_the_earlier_ones(db: str, start: str) -> None:
    """0004 creates the views; a view of that name already there with other columns makes it fail, after
    0001-0003 ran in the same transaction: none of them is kept."""
    if start == "original-table":
        original_table(db, ["evt-a", "evt-b", "evt-c"])
    conn = psycopg2.connect(db, connect_timeout=10)
    try:
        with conn, conn.cursor() as c:
            c.execute("CREATE VIEW daily_funnel AS SELECT 1 AS something_else")
    finally:
        conn.close()
    before = schema(db)

    line = error_line(migrate_cli(db), 1)
    assert line.startswith("ecomlogs migrate: error: applying migration 0004_analytics_views (nothing was "
                           "changed): cannot change name of view column"), line
    assert "HINT: " in line and "SQLSTATE 42P16" in line, line
    assert schema(db) == before
    relations = [name for name, _kind in before["relations"]]
    assert "schema_migrations" not in relations and "ecomlogs_kafka_offsets" not in relations

    # Once the conflict is gone, the same run goes through.
    conn = psycopg2.connect(db, connect_timeout=10)
    try:
        with conn, conn.cursor() as c:
            c.execute("DROP VIEW daily_funnel")
    finally:
        conn.close()
    assert ecomlogs.migrate(db) == [v for v, _n, _s in ecomlogs._core.migrations()]


@pytest.mark.parametrize("flags,words", [
    (["--dsn", "postgresql://x:notaport/db"], ["invalid PostgreSQL DSN", "port"]),
    (["--dsn", "host=127.0.0.1 port=x"], ["invalid PostgreSQL DSN", "port"]),
    (["--dsn", "postgresql://127.0.0.1/db?nosuchoption=1"], ["invalid PostgreSQL DSN", "nosuchoption"]),
    (["--dsn", "postgresql://127.0.0.1/db?sslmode=sometimes"], ["sslmode"]),
    (["--dsn", "postgresql://127.0.0.1/db", "--force"], ["unrecognized arguments: --force"]),
])
def test_bad_input_is_one_line_and_exit_2_before_connecting(flags: list[str], words: list[str]) -> None:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ecomlogs", "migrate", *flags], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert time.monotonic() - t0 < 20
    line = error_line(p, 2)
    assert all(w in line for w in words), p.stderr
