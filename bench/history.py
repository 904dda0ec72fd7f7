"""The ``history`` section of the benchmark (``bench/bench.py --sections history``): how the events table's
writers and readers behave as history grows, for two designs measured in the same run.

* ``current``: the schema before migration 0006 (migrations 0001-0005 only, applied from
  ``ecomlogs._core.migrations()`` in a fresh database and recorded in ``schema_migrations``): one unpartitioned
  table with a unique key on ``event_id``, the analytics views computed over the whole table, and the
  dashboard's queries as it ran them then (``count(*)`` and a ``GROUP BY`` over the table).
* ``new``: ``ecomlogs.migrate`` (today's migrations): the table partitioned by event day, the rollups the
  loader keeps in its transactions, the views and the dashboard over the rollups.

For each history size (``--history-rows``, default 0, 1M, 10M, 30M rows) each design's database grows to that
size in SQL (``generate_series``; the generator's distribution; rows spread over the 90 days before today;
unique key dropped while rows go in and built again after), the new design's rollups are rebuilt from the
table (``ecomlogs.rebuild_rollups``), then ``VACUUM ANALYZE`` and a checkpoint; then, measured:

* a server-side ``COPY`` of the new rows (``--history-new-rows``, default 400k, today's events, the same rows
  the loader loads) inside a transaction that is rolled back (``clock_timestamp()`` around the statement);
* every reader query as the dashboard and ``ecomlogs.analytics`` run them (through ``ecomlogs._core.query``,
  a connection each, as they do), the median of ``--repeat`` runs, and the tables each one's plan reads
  (``EXPLAIN``);
* the dashboard's PostgreSQL cost: its database loop (``Collector``, ``--interval 1``) running for
  ``--history-window`` seconds; the cluster's CPU (``/proc``: the postmaster and its children) with it minus
  without it, over windows of the same length, as % of one core.

And the loader (``ecomlogs load`` with its defaults), new design only: into an empty database, into the
largest history, and once more into an empty database with ``log_min_duration_statement = 0`` to time the
rollup statements it runs in each batch from the server's log. Today's loader cannot write to the current
design (it needs migration 0006's partitions function and rollup tables), so the current design has no loader
figure; its write cost is the ``COPY`` column.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import bench as B

log = logging.getLogger("ecomlogs.bench")

DESIGNS = ("current", "new")
DEFAULT_HISTORY_ROWS = (0, 1_000_000, 10_000_000, 30_000_000)
SMALL_HISTORY_ROWS = (0, 20_000)
DEFAULT_NEW_ROWS = 400_000
SMALL_NEW_ROWS = 2_000
DEFAULT_WINDOW_S = 10.0
SMALL_WINDOW_S = 1.0
HISTORY_DAYS = 90
CUSTOMERS = 10_000
GENERATE_CHUNK = 5_000_000
"""Rows per INSERT statement while a history grows (progress is printed between them)."""
FIRST_NEW_MIGRATION = "0006"
MERGE_EVERY_S = 30.0
"""How often the loader merges the customer deltas during a backlog (``MERGE_EVERY`` in ``src/sink.rs``)."""
"""The current design is every migration before this one."""
READ_FROM_ROLLUPS = {"ecomlogs_daily_rollup", "ecomlogs_customer_rollup", "ecomlogs_kafka_offsets"}
"""What the new design's readers may read: the rollups and the loader's offsets, never the events."""
CURRENT_DASHBOARD_SQL = {
    # python/ecomlogs/dashboard/collect.py before migration 0006 (commit 357b393): the rest of its queries
    # (funnel, revenue, offsets) have the same text today and read the views of the design they run on.
    "_SQL_TABLE": ("SELECT count(*) AS rows, max(created_at) AS last_loaded, "
                   "(now() AT TIME ZONE 'UTC')::date AS today FROM kafka_events_silver"),
    "_SQL_TYPES": "SELECT event_type, count(*) AS n FROM kafka_events_silver GROUP BY 1 ORDER BY 1",
}
CURRENT_ANALYTICS_SQL = {
    # python/ecomlogs/analytics.py before migration 0007: top customers ranked through the view.
    "_SQL_TOP_CUSTOMERS": (
        "SELECT currency, revenue_rank AS rank, customer_id, purchases, revenue, events, last_seen "
        "FROM top_customers WHERE purchases > 0 AND revenue_rank <= $1 AND ($2::text IS NULL OR currency = $2) "
        "ORDER BY currency, revenue_rank, customer_id"),
}
QUERY_NAMES = ("funnel today", "revenue today", "top 10 customers", "funnel 7 days",
               "dashboard: rows and last load", "dashboard: rows by type", "dashboard: stored offsets",
               "dashboard tick")
"""The reader queries timed for each design; ``dashboard tick`` is one whole ``Collector.poll_database`` (the
five queries the dashboard runs each second: rows, types, funnel today, revenue today, offsets)."""
ISSUE_COLUMNS = ("funnel today", "revenue today", "top 10 customers", "funnel 7 days")

# The generator's distribution (src/generate.rs): 70% PAGE_VIEW, 20% ADD_TO_CART, 10% PURCHASE; USD 70%,
# EUR 20%, GBP 10%; customers CUST-00001..CUST-10000, the square of a uniform draw (a few buy far more);
# purchases 10.00-2,000.00, other events 5.00-500.00, whole cents. Event times uniform over the 90 days
# before today (UTC); created_at 1-5 s later.
GENERATE_SQL = """
INSERT INTO kafka_events_silver (event_id, customer_id, event_type, amount, currency, event_timestamp, created_at)
SELECT gen_random_uuid()::text,
       'CUST-' || lpad((1 + floor(r_customer * r_customer * %(customers)s))::int::text, 5, '0'),
       kind,
       CASE WHEN kind = 'PURCHASE' THEN (1000 + floor(r_amount * 199001))::numeric / 100
            ELSE (500 + floor(r_amount * 49501))::numeric / 100 END,
       CASE WHEN r_currency < 0.7 THEN 'USD' WHEN r_currency < 0.9 THEN 'EUR' ELSE 'GBP' END,
       ts,
       ts + make_interval(secs => 1 + 4 * r_delay)
FROM (SELECT CASE WHEN r_kind < 0.7 THEN 'PAGE_VIEW' WHEN r_kind < 0.9 THEN 'ADD_TO_CART' ELSE 'PURCHASE' END
                 AS kind,
             r_customer, r_amount, r_currency, r_delay,
             %(start)s::timestamp + r_time * make_interval(days => %(days)s) AS ts
      FROM (SELECT random() AS r_kind, random() AS r_customer, random() AS r_amount, random() AS r_currency,
                   random() AS r_delay, random() AS r_time
            FROM generate_series(1, %(rows)s)) draws) events
"""
UNIQUE_KEY = {
    "current": ("kafka_events_silver_event_id_key", "UNIQUE (event_id)"),
    "new": ("kafka_events_silver_event_key", "UNIQUE (event_timestamp, event_id)"),
}
SCHEMA_MIGRATIONS_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""


def parse_rows(text: str) -> tuple[int, ...]:
    """``--history-rows``: comma-separated row counts (``0,1e6,10e6,30e6``; ``1_000_000`` works too)."""
    import argparse

    sizes = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected row counts such as 0,1e6,10e6, got {part!r}") from None
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise argparse.ArgumentTypeError(f"expected whole row counts of 0 or more, got {part!r}")
        sizes.append(int(value))
    if not sizes:
        raise argparse.ArgumentTypeError("--history-rows is empty")
    return tuple(sorted(set(sizes)))


def _short(n: int) -> str:
    """30000000 -> 30M, 20000 -> 20k (the issue's style)."""
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            value = n / div
            return f"{value:g}{suffix}"
    return f"{n:,}"


# ---------------------------------------------------------------------------------------------- databases
@dataclass
class Design:
    """One design's database while its history grows."""

    name: str
    dsn: str
    rows: int = 0
    sizes: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def create_current(ws: B.Workspace) -> Design:
    """A fresh database with the schema before migration 0006: migrations 0001-0005 applied from the
    embedded SQL and recorded in ``schema_migrations`` as ecomlogs recorded them then."""
    from ecomlogs import _core

    dsn = ws.new_database("hist_current")
    conn = B.pg_connect(dsn, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(SCHEMA_MIGRATIONS_DDL)
            for version, name, sql in _core.migrations():
                if version >= FIRST_NEW_MIGRATION:
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        conn.commit()
    finally:
        conn.close()
    return Design("current", dsn)


def create_new(ws: B.Workspace, kind: str = "hist_new") -> Design:
    """A fresh database migrated by ``ecomlogs.migrate`` (today's schema)."""
    import ecomlogs

    dsn = ws.new_database(kind)
    ecomlogs.migrate(dsn)
    return Design("new", dsn)


def applied_migrations(dsn: str) -> list[str]:
    conn = B.pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM schema_migrations ORDER BY version")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def grow(design: Design, rows: int) -> dict[str, Any]:
    """Adds ``rows`` generated rows to the design's table (unique key dropped meanwhile, built again after),
    rebuilds the new design's rollups, then VACUUM ANALYZE and CHECKPOINT; checks the counts. Returns the
    seconds each step took."""
    import ecomlogs

    steps: dict[str, Any] = {}
    conn = B.pg_connect(design.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = '1GB'")
            if design.name == "new":
                # The partitions of the history's days (and of the days ahead) exist first, as in production.
                cur.execute("SELECT count(*) FILTER (WHERE ecomlogs_ensure_day(d::date)) FROM generate_series("
                            "(now() AT TIME ZONE 'UTC')::date - %s, (now() AT TIME ZONE 'UTC')::date + 7, "
                            "interval '1 day') d", (HISTORY_DAYS,))
            if rows > 0:
                key, definition = UNIQUE_KEY[design.name]
                started = time.perf_counter()
                cur.execute(f"ALTER TABLE kafka_events_silver DROP CONSTRAINT {key}")
                cur.execute("SELECT ((now() AT TIME ZONE 'UTC')::date - %s)::timestamp", (HISTORY_DAYS,))
                start = cur.fetchone()[0]
                done = 0
                while done < rows:
                    chunk = min(GENERATE_CHUNK, rows - done)
                    cur.execute(GENERATE_SQL, {"customers": CUSTOMERS, "start": start, "days": HISTORY_DAYS,
                                               "rows": chunk})
                    done += chunk
                    B.progress(f"history: {design.name} design: {design.rows + done:,} rows "
                               f"({time.perf_counter() - started:.0f} s)")
                steps["insert_s"] = round(time.perf_counter() - started, 1)
                started = time.perf_counter()
                cur.execute(f"ALTER TABLE kafka_events_silver ADD CONSTRAINT {key} {definition}")
                steps["unique_key_s"] = round(time.perf_counter() - started, 1)
        if design.name == "new":
            started = time.perf_counter()
            days, customers = ecomlogs.rebuild_rollups(design.dsn)
            steps["rebuild_rollups_s"] = round(time.perf_counter() - started, 1)
            steps["rollups"] = {"days": days, "customers": customers}
        with conn.cursor() as cur:
            started = time.perf_counter()
            tables = "kafka_events_silver" + (", ecomlogs_daily_rollup, ecomlogs_customer_rollup"
                                              if design.name == "new" else "")
            cur.execute(f"VACUUM (ANALYZE) {tables}")
            cur.execute("CHECKPOINT")
            steps["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)
            design.rows += rows
            cur.execute("SELECT count(*) FROM kafka_events_silver")
            in_table = cur.fetchone()[0]
            if in_table != design.rows:
                raise B.BenchError(f"history ({design.name}): {in_table:,} rows in the table, expected {design.rows:,}")
            if design.name == "new":
                cur.execute("SELECT coalesce(sum(events), 0) FROM ecomlogs_daily_rollup")
                rolled = cur.fetchone()[0]
                if rolled != design.rows:
                    raise B.BenchError(f"history (new): the daily rollup counts {rolled:,} events, the table "
                                       f"{design.rows:,}")
            cur.execute("SELECT pg_total_relation_size('kafka_events_silver') + coalesce(("
                        "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                        "WHERE inhparent = 'kafka_events_silver'::regclass), 0)")
            steps["table_bytes"] = int(cur.fetchone()[0])
    finally:
        conn.close()
    return steps


def vacuum(dsn: str) -> None:
    conn = B.pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM kafka_events_silver")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- COPY
def copy_rolled_back(dsn: str, csv_path: Path, n: int) -> float:
    """Seconds of a server-side ``COPY kafka_events_silver FROM '<csv>'`` of ``n`` rows, in a transaction
    that is then rolled back (timed by the server: ``clock_timestamp()`` around the statement); the aborted
    rows are vacuumed away afterwards."""
    conn = B.pg_connect(dsn, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT clock_timestamp()")
            t0 = cur.fetchone()[0]
            cur.execute(f"COPY {B.TABLE} ({B.COPY_COLUMNS}) FROM %s WITH (FORMAT csv)", (str(csv_path),))
            copied = cur.rowcount
            cur.execute("SELECT clock_timestamp()")
            t1 = cur.fetchone()[0]
        conn.rollback()
    finally:
        conn.close()
    if copied != n:
        raise B.BenchError(f"history: COPY stored {copied} rows, expected {n}")
    vacuum(dsn)
    return float((t1 - t0).total_seconds())


# ---------------------------------------------------------------------------------------------- readers
@contextlib.contextmanager
def current_dashboard(design: str) -> Iterator[None]:
    """On the current design, the dashboard's and the analytics module's queries as they ran them then (see
    ``CURRENT_DASHBOARD_SQL``, ``CURRENT_ANALYTICS_SQL``)."""
    from ecomlogs import analytics
    from ecomlogs.dashboard import collect

    if design != "current":
        yield
        return
    swaps = [(collect, CURRENT_DASHBOARD_SQL), (analytics, CURRENT_ANALYTICS_SQL)]
    saved = [(module, {k: getattr(module, k) for k in sql}) for module, sql in swaps]
    try:
        for module, sql in swaps:
            for k, v in sql.items():
                setattr(module, k, v)
        yield
    finally:
        for module, values in saved:
            for k, v in values.items():
                setattr(module, k, v)


@contextlib.contextmanager
def recorded_queries() -> Iterator[list[tuple[str, Any]]]:
    """Every ``ecomlogs._core.query`` call made meanwhile (the analytics module runs its SQL through it) and
    every query of the dashboard's collector (on its open connection), as (sql, params); the calls still
    run."""
    from ecomlogs import _core
    from ecomlogs.dashboard import collect

    real, real_q = _core.query, collect.Collector._q
    seen: list[tuple[str, Any]] = []

    def recording(sql: str, params: Any = None, *, dsn: Optional[str] = None) -> Any:
        seen.append((sql, params))
        return real(sql, params, dsn=dsn)

    def recording_q(self: Any, sql: str, params: Any = None) -> Any:
        seen.append((sql, params))
        return real_q(self, sql, params)

    _core.query = recording  # type: ignore[assignment]
    collect.Collector._q = recording_q  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        _core.query = real  # type: ignore[assignment]
        collect.Collector._q = real_q  # type: ignore[method-assign]


def reader_queries(dsn: str, bootstrap_servers: str) -> dict[str, Callable[[], Any]]:
    """Each reader query as its reader runs it (the dashboard's SQL constants on its collector's open
    connection, the analytics functions themselves with the connection each opens, and one whole dashboard
    database tick)."""
    from ecomlogs import analytics
    from ecomlogs import settings as S
    from ecomlogs.dashboard import collect

    collector = collect.Collector(dsn=dsn, bootstrap_servers=bootstrap_servers, interval_s=1.0)
    # The SQL constants are read when called, so that current_dashboard() applies to them.
    return {
        "funnel today": lambda: collector._q(collect._SQL_FUNNEL),
        "revenue today": lambda: collector._q(collect._SQL_REVENUE),
        "top 10 customers": lambda: analytics.top_customers(10, dsn=dsn),
        "funnel 7 days": lambda: analytics.daily_funnel(days=7, dsn=dsn),
        "dashboard: rows and last load": lambda: collector._q(collect._SQL_TABLE),
        "dashboard: rows by type": lambda: collector._q(collect._SQL_TYPES),
        "dashboard: stored offsets": lambda: collector._q(collect._SQL_OFFSETS, [S.LOADER_GROUP, S.CLEAN_TOPIC]),
        "dashboard tick": collector.poll_database,
    }


def _relations(plan: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add(str(plan["Relation Name"]))
        for v in plan.values():
            found |= _relations(v)
    elif isinstance(plan, list):
        for v in plan:
            found |= _relations(v)
    return found


def plan_relations(dsn: str, sql: str, params: Any) -> list[str]:
    """The tables the plan of ``sql`` reads (``EXPLAIN (FORMAT JSON)``, not executed)."""
    from ecomlogs import _core

    _cols, _types, rows = _core.query("EXPLAIN (FORMAT JSON) " + sql, params, dsn=dsn)
    doc = rows[0][0]
    return sorted(_relations(json.loads(doc) if isinstance(doc, str) else doc))


def _psycopg2_sql(sql: str, params: Any) -> tuple[str, dict[str, Any]]:
    """``$1``-style SQL and its parameters for psycopg2 (``%(p1)s``)."""
    values = {f"p{i + 1}": v for i, v in enumerate(params or [])}
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql.replace("%", "%%")), values


def open_connection_seconds(conn: Any, statements: Sequence[tuple[str, Any]]) -> float:
    """Wall seconds of ``statements`` (run and fetched) on an open connection: the queries alone."""
    started = time.perf_counter()
    with conn.cursor() as cur:
        for sql, params in statements:
            cur.execute(*_psycopg2_sql(sql, params))
            cur.fetchall()
    return time.perf_counter() - started


def time_readers(design: str, dsn: str, bootstrap_servers: str, runs: int) -> dict[str, dict[str, Any]]:
    """Every reader query ``runs`` times as its reader runs it (the first run recorded: the SQL it sent),
    then the recorded SQL ``runs`` times on an open connection (the queries alone, without the connection
    each reader opens): medians, each run, the SQL and the tables its plan reads (``EXPLAIN``)."""
    out: dict[str, dict[str, Any]] = {}
    conn = B.pg_connect(dsn)
    try:
        with current_dashboard(design):
            for name, call in reader_queries(dsn, bootstrap_servers).items():
                times = []
                with recorded_queries() as seen:
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
                for _ in range(runs - 1):
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
                statements = list(seen)
                open_times = [open_connection_seconds(conn, statements) for _ in range(runs)]
                relations = sorted({r for sql, params in statements for r in plan_relations(dsn, sql, params)})
                out[name] = {"seconds": B.median(times), "runs": [round(t, 6) for t in times],
                             "open_connection_seconds": B.median(open_times),
                             "open_connection_runs": [round(t, 6) for t in open_times],
                             "relations": relations, "sql": [sql for sql, _ in statements]}
    finally:
        conn.close()
    return out


def settle(dsn: str, timeout_s: float = 180.0) -> float:
    """A checkpoint, then waits (up to ``timeout_s``) until no autovacuum worker runs in the cluster, so that
    the background does not move between the windows with and without the dashboard; returns the seconds."""
    started = time.perf_counter()
    conn = B.pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
            while time.perf_counter() - started < timeout_s:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
                if cur.fetchone()[0] == 0:
                    break
                time.sleep(0.5)
    finally:
        conn.close()
    return round(time.perf_counter() - started, 2)


def dashboard_cpu(ws: B.Workspace, design: str, dsn: str, bootstrap_servers: str, window_s: float) -> dict[str, Any]:
    """The dashboard's PostgreSQL cost: the cluster's CPU over ``window_s`` with the dashboard's database loop
    running at ``--interval 1`` (the Collector's own loop, with the queries of the design's dashboard), minus
    the cluster's CPU without it (half a window before and half a window after, so a drift of the background
    shows less), as % of one core. Queries still running at the end of the window are cancelled."""
    import threading

    from ecomlogs.dashboard import collect

    pids = ws.server_pids()
    if not pids.get("postgres"):
        return {"cpu_pct_of_core": None, "note": "PostgreSQL's processes are not visible from here"}
    quiet_s = settle(dsn)
    def idle(seconds: float) -> tuple[float, float]:
        t0, before = time.perf_counter(), B.server_cpu(pids)
        time.sleep(seconds)
        return B.cpu_delta(before, B.server_cpu(pids))["postgres"] or 0.0, time.perf_counter() - t0

    idle_before = idle(window_s / 2)

    collector = collect.Collector(dsn=dsn, bootstrap_servers=bootstrap_servers, interval_s=1.0)
    ticks: list[float] = []
    poll = collector.poll_database

    def counted() -> None:
        poll()
        ticks.append(time.perf_counter())

    dash_log = logging.getLogger("ecomlogs.dashboard")
    level = dash_log.level
    with current_dashboard(design):
        thread = threading.Thread(target=collector._loop, args=("database", counted), daemon=True,
                                  name="bench-dashboard")
        t0, before = time.perf_counter(), B.server_cpu(pids)
        thread.start()
        time.sleep(window_s)
        with_cpu = B.cpu_delta(before, B.server_cpu(pids))["postgres"] or 0.0
        with_s = time.perf_counter() - t0
        state = dict(collector.db)  # before the queries still running are cancelled
        collector.stopping.set()
        dash_log.setLevel(logging.ERROR)  # the cancelled query's error is expected
        try:
            conn = B.pg_connect(dsn)
            try:
                with conn.cursor() as cur:
                    # Every other connection ends (the collector's open one too); the count is of the
                    # queries that were still running.
                    cur.execute("SELECT count(*) FILTER (WHERE state = 'active') FROM "
                                "(SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity "
                                " WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                " AND backend_type = 'client backend') s")
                    cancelled = int(cur.fetchone()[0])
            finally:
                conn.close()
            thread.join(120)
        finally:
            dash_log.setLevel(level)
    if thread.is_alive():
        raise B.BenchError(f"history ({design}): the dashboard loop did not stop")
    if state.get("ok") is False:
        raise B.BenchError(f"history ({design}): the dashboard failed: {state.get('error')}")
    idle_after = idle(window_s / 2)
    without, without_s = idle_before[0] + idle_after[0], idle_before[1] + idle_after[1]
    return {
        "cpu_pct_of_core": round(100 * (with_cpu / with_s - without / without_s), 2),
        "with_cpu_s": round(with_cpu, 3), "with_window_s": round(with_s, 3),
        "without_cpu_s": round(without, 3), "without_window_s": round(without_s, 3),
        "ticks_completed": len(ticks), "queries_cancelled_at_end": cancelled, "settled_s": quiet_s,
    }


# ---------------------------------------------------------------------------------------------- loader
def clean_topic(cfg: B.BenchConfig, ws: B.Workspace, n: int) -> str:
    """``n`` valid events of today: the ecomlogs producer (``--invalid-ratio 0``, seeded) to a raw topic,
    then the ecomlogs processor to a clean topic; both read back and counted."""
    raw, clean, dlq = ws.new_topics("hist_raw", "hist_clean", "hist_dlq")
    B.progress(f"history: producing {n:,} events of today to {clean} (producer, then processor)")
    produce = [*B._script(cfg, "producer.py", "produce"), "--count", str(n), "--quiet", "--topic", raw,
               "--seed", str(B.PIPELINE_SEED), "--bootstrap-servers", cfg.bootstrap_servers, "--interval-ms", "0",
               "--invalid-ratio", "0"]
    B._check_exit(B.run_child(produce, cwd=cfg.repo_root), "ecomlogs producer")
    run = B.run_child(B.processor_cmd(cfg, "ecomlogs", raw, clean, dlq, ws.name("hist_prep")), cwd=cfg.repo_root)
    B._check_exit(run, "ecomlogs stream processor")
    counts = B.parse_processed(run.stderr)
    if counts["consumed"] != n or counts["valid"] != n:
        raise B.BenchError(f"history: the processor passed {counts}, expected {n} valid events")
    in_topic = B.count_messages(cfg.bootstrap_servers, clean, n)
    if in_topic != n:
        raise B.BenchError(f"history: {in_topic} records in {clean}, expected {n}")
    ws.drop_topics([raw, dlq])
    return clean


def _next_id(dsn: str) -> int:
    """The ids handed out so far (the table's id sequence; cheap whatever the table's size)."""
    conn = B.pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM kafka_events_silver_id_seq")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def new_rows_summary(dsn: str, after_id: int, span: Optional[tuple[datetime, datetime]]) -> dict[str, Any]:
    """:func:`bench.table_summary` of the rows with ids above ``after_id`` (and event times in ``span``, so
    that only the partitions of those days are read)."""
    where, params = "id > %s", [after_id]
    if span is not None:
        where += " AND event_timestamp BETWEEN %s AND %s"
        params += list(span)
    conn = B.pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT event_id), min(event_timestamp), max(event_timestamp) "
                        f"FROM {B.TABLE} WHERE {where}", params)
            rows, distinct, lo, hi = cur.fetchone()
            cur.execute(f"SELECT created_at, count(*) FROM {B.TABLE} WHERE {where} GROUP BY created_at "
                        "ORDER BY created_at", params)
            batches = cur.fetchall()
    finally:
        conn.close()
    return {"rows": rows, "distinct_event_ids": distinct, "batches": len(batches),
            "event_span": [lo.isoformat() if lo else None, hi.isoformat() if hi else None],
            "batch_starts": B.batch_starts(batches),
            "batch_sizes": [k for _, k in batches]}


def postgres_log() -> Optional[Path]:
    """The dev stack's PostgreSQL log, when the dev stack runs the server (else None)."""
    with contextlib.suppress(Exception):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
        import devstack

        info = devstack.status()
        if info.postgres.ours and info.postgres.log and Path(info.postgres.log).is_file():
            return Path(info.postgres.log)
    return None


_DURATION = re.compile(r"duration: ([\d.]+) ms {2}(?:(?:parse|bind|execute) [^:]*|statement): (.*)")


def statement_kind(sql: str) -> str:
    s = sql.strip().upper()
    if "ECOMLOGS_CUSTOMER_ROLLUP" in s or ("ECOMLOGS_CUSTOMER_DELTAS" in s and not s.startswith("INSERT")):
        return "customer merge"  # the deltas read, added to the customer rollup, deleted
    if "ECOMLOGS_DAILY_ROLLUP" in s or "ECOMLOGS_CUSTOMER_DELTAS" in s:  # each batch's own share
        return "rollups"
    if s.startswith("COPY"):
        return "copy"
    if "ECOMLOGS_KAFKA_OFFSETS" in s:
        return "offsets"
    if "ECOMLOGS_ENSURE_DAY" in s or "PG_INHERITS" in s:
        return "partitions"
    if s.split(" ", 1)[0] in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START"):
        return "transaction control"
    return "other"


def server_times(text: str) -> dict[str, Any]:
    """Server time per kind of statement from ``log_min_duration_statement = 0`` lines (parse, bind and
    execute of a prepared statement all count)."""
    seconds: dict[str, float] = {}
    statements: dict[str, int] = {}
    for line in text.splitlines():
        m = _DURATION.search(line)
        if not m:
            continue
        kind = statement_kind(m[2])
        seconds[kind] = seconds.get(kind, 0.0) + float(m[1]) / 1000
        if "execute" in line.split("ms", 1)[1][:12] or "statement:" in line:
            statements[kind] = statements.get(kind, 0) + 1
    return {"seconds": {k: round(v, 4) for k, v in sorted(seconds.items())}, "statements": statements}


def run_loader(cfg: B.BenchConfig, ws: B.Workspace, dsn: str, clean: str, n: int, label: str,
               span: Optional[tuple[datetime, datetime]] = None, log_statements: bool = False) -> dict[str, Any]:
    """``ecomlogs load`` with its defaults (no tuning flag) from ``clean`` into ``dsn``; rows/s in the table as
    the ``load`` section measures it (:func:`bench.batch_rate`); with ``log_statements``, the server time of
    its statements by kind, from the PostgreSQL log."""
    defaults = dataclasses.replace(cfg, defaults_only=True)
    after_id = _next_id(dsn)
    (dlq,) = ws.new_topics("hist_load_dlq")
    pg_log = postgres_log() if log_statements else None
    log_from = pg_log.stat().st_size if pg_log else 0
    if log_statements and pg_log:
        conn = B.pg_connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                cur.execute(f'ALTER DATABASE "{cur.fetchone()[0]}" SET log_min_duration_statement = 0')
        finally:
            conn.close()
    B.progress(f"history: loader ({label}): {n:,} rows")
    pids = ws.server_pids()
    try:
        before = B.server_cpu(pids)
        run = B.run_child(B.loader_cmd(defaults, "ecomlogs", clean, dlq, ws.name("hist_load"), dsn), cwd=cfg.repo_root)
        servers = B.cpu_delta(before, B.server_cpu(pids))
        log_to = pg_log.stat().st_size if pg_log else 0  # the loader's lines end here (the checks below log too)
    finally:
        ws.drop_topics([dlq])
    B._check_exit(run, f"ecomlogs loader ({label})")
    reported = B.parse_loaded(run.stderr)
    if reported["rows"] != n or reported["duplicates"] or reported["dead_lettered"]:
        raise B.BenchError(f"history: loader ({label}) reported {reported}, expected {n} rows")
    summary = new_rows_summary(dsn, after_id, span)
    if summary["rows"] != n or summary["distinct_event_ids"] != n:
        raise B.BenchError(f"history: loader ({label}): {summary['rows']} new rows "
                           f"({summary['distinct_event_ids']} event ids), expected {n}")
    rate = B.batch_rate(summary)
    timing = "rows of the batches before the second-to-last / (second-to-last batch's created_at - first's)"
    if rate is None:
        rate = n / max(run.wall_s - cfg.until_idle_s, 1e-6)
        timing = "single batch: rows / (process wall time - idle wait), start-up and group join included"
    out: dict[str, Any] = {"label": label, "rows": n, "rows_per_s": rate, "timing": timing, "after_id": after_id,
                           "process": run.usage(), "postgres_cpu_s": servers["postgres"], "table": summary,
                           "reported": reported}
    if log_statements:
        if pg_log is None:
            out["statements"] = None
            out["statements_note"] = "the PostgreSQL log is not readable from here (not the dev stack's server)"
        else:
            with open(pg_log, "rb") as f:
                f.seek(log_from)
                text = f.read(log_to - log_from).decode("utf-8", "replace")
            times = server_times(text)
            batches = summary["batches"]
            active_s = n / rate
            merges = sum(1 for line in text.splitlines()
                         if _DURATION.search(line) and "execute" in line and "INSERT INTO ecomlogs_customer_rollup" in line)
            out["statements"] = {
                **times, "batches": batches, "active_s": round(active_s, 4),
                "rollup_ms_per_batch": round(1000 * times["seconds"].get("rollups", 0.0) / batches, 3) if batches else None,
                "copy_ms_per_batch": round(1000 * times["seconds"].get("copy", 0.0) / batches, 3) if batches else None,
                "rollup_share_of_active_time": round(times["seconds"].get("rollups", 0.0) / active_s, 4),
                # The customer merges run when the input goes quiet, at exit and every MERGE_EVERY_S during
                # a backlog: each costs about what the customers it touches cost, whatever the rows.
                "merges": merges,
                "merge_ms_each": round(1000 * times["seconds"].get("customer merge", 0.0) / merges, 3) if merges else None,
                "merge_share_in_a_backlog": round(times["seconds"].get("customer merge", 0.0) / merges / MERGE_EVERY_S, 4)
                if merges else None,
                "source": "PostgreSQL log, log_min_duration_statement = 0 on this database",
            }
    return out


def loader_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Loader runs of the same rows: the median rate, the first run's table summary, every run."""
    return {"rows": runs[0]["rows"], "rows_per_s": B.median([r["rows_per_s"] for r in runs]),
            "table": runs[0]["table"], "runs": list(runs)}


def remove_rows(dsn: str, after_id: int, span: tuple[datetime, datetime]) -> None:
    """Deletes what a loader run added (ids above ``after_id`` in ``span``) and vacuums, so that the next run
    loads the same rows into the same table (the rollups keep their counts: their keys are what costs)."""
    conn = B.pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {B.TABLE} WHERE id > %s AND event_timestamp BETWEEN %s AND %s",
                        (after_id, *span))
            cur.execute(f"VACUUM {B.TABLE}")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- section
def measure_size(cfg: B.BenchConfig, ws: B.Workspace, design: Design, csv_path: Path, n_new: int) -> dict[str, Any]:
    """Everything measured at one history size, for one design (see the module's docstring)."""
    entry: dict[str, Any] = {"rows": design.rows, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    B.progress(f"history: {design.name} design, {design.rows:,} rows: reader queries ({cfg.repeat} runs each)")
    entry["queries"] = time_readers(design.name, design.dsn, cfg.bootstrap_servers, cfg.repeat)
    B.progress(f"history: {design.name} design, {design.rows:,} rows: dashboard for {cfg.history_window_s:g} s "
               "(and as long without)")
    entry["dashboard"] = dashboard_cpu(ws, design.name, design.dsn, cfg.bootstrap_servers, cfg.history_window_s)
    B.progress(f"history: {design.name} design, {design.rows:,} rows: COPY of {n_new:,} rows, rolled back "
               f"({cfg.repeat} runs)")
    copies = [copy_rolled_back(design.dsn, csv_path, n_new) for _ in range(cfg.repeat)]
    entry["copy"] = {"seconds": B.median(copies), "runs": [round(s, 4) for s in copies],
                     "rows_per_s": n_new / B.median(copies) if B.median(copies) > 0 else None}
    return entry


def run_history(cfg: B.BenchConfig, ws: B.Workspace) -> B.SectionResult:
    sizes = cfg.history_rows
    n_new = cfg.history_new_rows
    clean = clean_topic(cfg, ws, n_new)
    csv_path = Path(tempfile.gettempdir()) / f"ecomlogs-bench-history-{ws.tag}.csv"
    ws.files.append(csv_path)

    # The loader into an empty database of the new design (its rows become the COPY file), then again with
    # its statements timed by the server.
    loader: dict[str, Any] = {}
    empties = []
    for i in range(cfg.repeat):
        empty = create_new(ws, "hist_load_empty")
        try:
            empties.append(run_loader(cfg, ws, empty.dsn, clean, n_new,
                                      f"new design, empty table, run {i + 1}/{cfg.repeat}"))
            if i == 0:
                B.export_csv(empty.dsn, csv_path)
        finally:
            ws.drop_database(empty.dsn)
    loader["empty"] = loader_runs(empties)
    lo, hi = (datetime.fromisoformat(t) for t in loader["empty"]["table"]["event_span"])
    timed_db = create_new(ws, "hist_load_logged")
    try:
        loader["statements"] = run_loader(cfg, ws, timed_db.dsn, clean, n_new,
                                          "new design, empty table, statements logged", log_statements=True)
    finally:
        ws.drop_database(timed_db.dsn)

    designs = {"current": create_current(ws), "new": create_new(ws)}
    migrations = {name: applied_migrations(d.dsn) for name, d in designs.items()}
    try:
        for i, size in enumerate(sizes):
            order = list(DESIGNS) if i % 2 == 0 else list(reversed(DESIGNS))
            for name in order:
                design = designs[name]
                if size < design.rows:
                    raise B.BenchError("history sizes must grow")  # parse_rows sorts them: cannot happen
                B.progress(f"history: {name} design: growing to {size:,} rows")
                steps = grow(design, size - design.rows)
                entry = measure_size(cfg, ws, design, csv_path, n_new)
                entry["growth"] = steps
                design.sizes.append(entry)
        largest = designs["new"]
        runs = []
        for i in range(cfg.repeat):
            if runs:  # the same rows again: the previous run's go first
                remove_rows(largest.dsn, runs[-1]["after_id"], (lo, hi))
            runs.append(run_loader(cfg, ws, largest.dsn, clean, n_new,
                                   f"new design, {largest.rows:,} rows of history, run {i + 1}/{cfg.repeat}",
                                   span=(lo, hi)))
        loader["history"] = {**loader_runs(runs), "history_rows": largest.rows}
    finally:
        for d in designs.values():
            ws.drop_database(d.dsn)

    details: dict[str, Any] = {
        "history_rows": list(sizes),
        "new_rows": n_new,
        "history_days": HISTORY_DAYS,
        "repeat": cfg.repeat,
        "dashboard_window_s": cfg.history_window_s,
        "designs": {name: {"migrations": migrations[name], "sizes": d.sizes} for name, d in designs.items()},
        "loader": {**loader, "current_design": None,
                   "current_design_note": "not run: today's loader needs migration 0006 (ecomlogs_ensure_day and "
                                          "the rollup tables)"},
        "generator": "70% PAGE_VIEW, 20% ADD_TO_CART, 10% PURCHASE; USD 70%, EUR 20%, GBP 10%; 10,000 customers "
                     "(square of a uniform draw); purchases 10.00-2,000.00, others 5.00-500.00; event times "
                     "uniform over the 90 days before today (UTC)",
    }
    details["summary"] = summarise(details)
    markdown = history_markdown(details)
    print("\n\n".join(markdown), flush=True)
    return B.SectionResult(details=details, markdown=markdown)


# ---------------------------------------------------------------------------------------------- report
def summarise(details: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue's goals are about (printed beside them; nothing is judged)."""
    new = details["designs"]["new"]["sizes"]
    current = details["designs"]["current"]["sizes"]
    loader = details["loader"]
    out: dict[str, Any] = {}
    for key, field in (("slowest_reader_query_s", "open_connection_seconds"),
                       ("slowest_reader_query_with_connection_s", "seconds")):
        out[key] = {
            design: {str(s["rows"]): max(q[field] for name, q in s["queries"].items() if name != "dashboard tick")
                     for s in sizes}
            for design, sizes in (("current", current), ("new", new))
        }
    out["dashboard_cpu_pct_of_core"] = {
        design: {str(s["rows"]): s["dashboard"].get("cpu_pct_of_core") for s in sizes}
        for design, sizes in (("current", current), ("new", new))
    }
    out["new_design_reads_only_rollups"] = all(
        set(q["relations"]) <= READ_FROM_ROLLUPS for s in new for q in s["queries"].values())
    empty = loader["empty"]["rows_per_s"]
    hist = loader["history"]["rows_per_s"]
    out["loader_rows_per_s"] = {"empty": empty, "history": hist, "history_rows": loader["history"]["history_rows"]}
    out["loader_history_over_empty"] = hist / empty if empty else None
    copy_at = {s["rows"]: s["copy"]["rows_per_s"] for s in new}
    first, last = min(copy_at), max(copy_at)
    out["copy_rows_per_s"] = {"empty": copy_at.get(0), "history": copy_at[last]}
    out["loader_over_copy"] = {
        "empty": empty / copy_at[0] if copy_at.get(0) else None,
        "history": hist / copy_at[last] if copy_at[last] else None,
    }
    if first != 0:
        out["loader_over_copy"]["empty_note"] = "no 0-row size in --history-rows: no COPY into an empty table"
    statements = loader["statements"].get("statements")
    out["rollup_share_of_loader_time"] = statements["rollup_share_of_active_time"] if statements else None
    return out


def _s(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v >= 10:
        return f"{v:.0f} s"
    if v >= 1:
        return f"{v:.1f} s"
    return f"{v:.2g} s"


def _rate(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.0f}k rows/s" if v >= 10_000 else f"{v:,.0f} rows/s"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}%"


def design_table(details: dict[str, Any], design: str) -> str:
    n_new = _short(details["new_rows"])
    head = (f"| rows already in the table | COPY of {n_new} new rows | " + " | ".join(ISSUE_COLUMNS)
            + " | dashboard tick (5 queries, a connection each) | dashboard at 1 s: PostgreSQL CPU, % of one core |")
    lines = [head, "|---:|---:|" + "---:|" * len(ISSUE_COLUMNS) + "---:|---:|"]
    for s in details["designs"][design]["sizes"]:
        q = s["queries"]
        cells = [_short(s["rows"]) if s["rows"] else "0", _rate(s["copy"]["rows_per_s"])]
        cells += [_s(q[name]["open_connection_seconds"]) for name in ISSUE_COLUMNS]
        cells += [_s(q["dashboard tick"]["seconds"]), _pct(s["dashboard"].get("cpu_pct_of_core"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def history_markdown(details: dict[str, Any]) -> list[str]:
    sm = details["summary"]
    loader = details["loader"]
    n_new = details["new_rows"]
    hist_rows = loader["history"]["history_rows"]
    blocks = [
        f"**history**: each design's table grown in SQL to {', '.join(_short(r) if r else '0' for r in details['history_rows'])} "
        f"rows ({details['generator']}); at each size VACUUM ANALYZE, then: a server-side COPY of {n_new:,} new "
        "rows of today in a transaction rolled back (rows/s of the statement); the SQL the dashboard and "
        "ecomlogs.analytics send for each reader query, timed on an open connection (the query alone, median "
        f"of {details['repeat']}); one dashboard tick as the dashboard runs it (five queries, each on a new "
        f"connection, as `ecomlogs.dashboard` does); the dashboard's database loop at 1 s for "
        f"{details['dashboard_window_s']:g} s (PostgreSQL CPU with it minus without, % of one core).",
        "Current design (migrations 0001-0005: unpartitioned table, views over it, the dashboard's queries "
        "before 0006):\n\n" + design_table(details, "current"),
        "New design (today's migrations: daily partitions, rollups):\n\n" + design_table(details, "new"),
    ]
    stm = loader["statements"].get("statements")
    lines = [
        f"- loader (`ecomlogs load`, defaults), new design: {_rate(sm['loader_rows_per_s']['empty'])} into an empty "
        f"table, {_rate(sm['loader_rows_per_s']['history'])} with {_short(hist_rows) if hist_rows else 0} rows of history: "
        f"{_ratio(sm['loader_history_over_empty'])} of its empty-table rate (goal ≥ 0.8)",
        f"- loader / server-side COPY of the same rows into the same table: {_ratio(sm['loader_over_copy']['empty'])} "
        f"empty, {_ratio(sm['loader_over_copy']['history'])} with history (goal ≥ 0.85)",
    ]
    if stm:
        lines.append(
            f"- rollups: each batch's rollup statements took {stm['rollup_ms_per_batch']:.1f} ms "
            f"({stm['batches']} batches; COPY {stm['copy_ms_per_batch']:.1f} ms per batch), "
            f"{100 * stm['rollup_share_of_active_time']:.1f}% of the loader's time; "
            + (f"{stm['merges']} customer merge(s) of {stm['merge_ms_each']:.0f} ms each (when the input went quiet and at "
               f"exit; one every {MERGE_EVERY_S:g} s during a backlog: {100 * stm['merge_share_in_a_backlog']:.1f}% of "
               "the time)" if stm.get("merges") else "no customer merge")
            + " (goal ≤ 10% in all; server time from the PostgreSQL log with log_min_duration_statement = 0)")
    else:
        lines.append(f"- rollups: not timed ({loader['statements'].get('statements_note')})")
    lines.append("- current design: no loader figure (" + loader["current_design_note"] + ")")
    def at(values: dict[str, Optional[float]], fmt: Callable[[Optional[float]], str]) -> str:
        return ", ".join(f"{fmt(v)} at {_short(int(k)) if int(k) else 0}" for k, v in values.items())

    lines.append(
        "- new design, slowest single reader query: " + at(sm["slowest_reader_query_s"]["new"], _s)
        + " on an open connection; " + at(sm["slowest_reader_query_with_connection_s"]["new"], _s)
        + " as the readers run it, with its connection (goal ≤ 0.05 s at 10M and 30M); the dashboard at 1 s: "
        + at(sm["dashboard_cpu_pct_of_core"]["new"], _pct) + " of one core (goal ≤ 5%); its plans read only "
        "the rollups and the offsets table: " + ("yes" if sm["new_design_reads_only_rollups"] else "NO"))
    lines.append(
        "- current design, slowest single reader query: " + at(sm["slowest_reader_query_s"]["current"], _s)
        + " on an open connection; the dashboard at 1 s: " + at(sm["dashboard_cpu_pct_of_core"]["current"], _pct)
        + " of one core")
    blocks.append("\n".join(lines))
    return blocks


def _ratio(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}"
