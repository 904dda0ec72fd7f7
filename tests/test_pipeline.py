"""The main job: `ecomlogs run` carries events through all three stages and reports from the views."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent


def test_run_carries_every_valid_event_into_the_table_and_reports(kafka_bootstrap: str, db: str) -> None:
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
    assert produced == 20_000
    assert valid + invalid >= produced  # leftovers of earlier runs on the shared default topics may add
    assert new_rows == valid
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT count(*), count(DISTINCT event_id) FROM kafka_events_silver")
        assert c.fetchone() == (new_rows, new_rows)
    for title in ("Funnel by day (UTC)", "Revenue by day and currency", "Top customers"):
        assert title in p.stdout
    # The status line reports per-stage progress.
    assert "produce " in p.stderr and "| process " in p.stderr and "| load " in p.stderr
