"""How long ``ecomlogs migrate`` takes to upgrade a table of the design before migration 0006 (unpartitioned,
views over it) holding N rows of history: the rows generated in SQL as the ``history`` section does
(``bench/history.py``), then ``ecomlogs migrate`` run as a user runs it, its output kept.

    python bench/upgrade.py                 # 10M rows (a few minutes to generate, then the upgrade)
    python bench/upgrade.py --rows 1e6

Prints the upgrade's wall time, its own estimate and progress lines, and checks afterwards that every row
and event_id is there and the daily rollup counts them all. Uses the dev stack's PostgreSQL (started with
``./dev stack up``; ``./dev bench`` starts it) unless ``--dsn`` names another server.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402
import history  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=history.parse_rows, default=(10_000_000,), metavar="N",
                   help="rows of history to upgrade (default 10e6)")
    p.add_argument("--dsn", default=B.S.DEFAULT_DSN, help="a PostgreSQL server to create the database on")
    args = p.parse_args()
    rows = max(args.rows)
    cfg = B.BenchConfig(events=1, produce_events=1, repeat=1, bootstrap_servers=B.S.DEFAULT_BOOTSTRAP_SERVERS,
                        dsn=args.dsn, out=Path("/tmp"), sections=(), small=False, keep_topics=False,
                        repo_root=Path(__file__).resolve().parents[1])
    ws = B.Workspace(cfg)
    try:
        design = history.create_current(ws)
        B.progress(f"upgrade: generating {rows:,} rows in the design before 0006")
        history.grow(design, rows)
        conn = B.pg_connect(design.dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT event_id), sum(id) FROM kafka_events_silver")
            before = cur.fetchone()
        conn.close()
        B.progress("upgrade: ecomlogs migrate")
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "ecomlogs", "migrate", "--dsn", design.dsn],
                             capture_output=True, text=True, timeout=3600)
        elapsed = time.perf_counter() - started
        print(run.stderr + run.stdout, end="")
        if run.returncode != 0:
            print(f"upgrade: ecomlogs migrate exited {run.returncode}", file=sys.stderr)
            return 1
        conn = B.pg_connect(design.dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT event_id), sum(id) FROM kafka_events_silver")
            after = cur.fetchone()
            cur.execute("SELECT coalesce(sum(events), 0) FROM ecomlogs_daily_rollup")
            rolled = cur.fetchone()[0]
        conn.close()
        if after != before or rolled != rows:
            print(f"upgrade: rows/event_ids/sum(id) {before} before, {after} after; daily rollup {rolled:,}",
                  file=sys.stderr)
            return 1
        print(f"upgrade of {rows:,} rows: {elapsed:.0f} s wall ({rows / elapsed:,.0f} rows/s); every row, id and "
              f"event_id kept; the daily rollup counts {rolled:,} events")
        return 0
    finally:
        ws.close()


if __name__ == "__main__":
    sys.exit(main())
