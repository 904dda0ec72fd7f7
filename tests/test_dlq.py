"""Dead letters you can act on: inspect by stage and reason, replay to the source topic once the cause is
fixed, exactly once in the table however often it is replayed (real broker, real PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg2

import ecomlogs
from helpers import ROOT, assert_exact, loader_cmd, produce_clean, read_all, row_count, run_until_caught_up, unique


def _sql(dsn: str, statement: str) -> None:
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as c:
        c.execute(statement)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecomlogs", "dlq", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_rows_the_database_rejected_are_replayed_once_the_constraint_is_dropped(kafka_bootstrap: str,
                                                                               db: str) -> None:
    clean, dlq, group = unique("clean"), unique("dlq"), unique("g")
    expected = produce_clean(kafka_bootstrap, clean, 3000, seed=61)
    rejected = {k for k, e in expected.items() if e["customer_id"].startswith("CUST-001")}
    assert rejected, "the seed should give some customers the constraint rejects"
    ecomlogs.migrate(db)
    _sql(db, "ALTER TABLE kafka_events_silver ADD CONSTRAINT dba_rule CHECK (customer_id NOT LIKE 'CUST-001%')")
    cmd = [*loader_cmd(kafka_bootstrap, clean, db, group)]
    cmd[cmd.index("--dlq-topic") + 1] = dlq
    run_until_caught_up(cmd)
    assert row_count(db) == len(expected) - len(rejected)

    found = _cli("inspect", "--bootstrap-servers", kafka_bootstrap, "--topic", dlq, "--json")
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    assert report["counts"] == [{"stage": "loader", "reason": "database_rejected", "count": len(rejected)}]
    sample = report["samples"][0]
    assert sample["source_topic"] == clean and "dba_rule" in sample["detail"]
    assert sample["headers"]["sqlstate"] == "23514"

    _sql(db, "ALTER TABLE kafka_events_silver DROP CONSTRAINT dba_rule")
    dry = _cli("replay", "--bootstrap-servers", kafka_bootstrap, "--topic", dlq, "--reason", "database_rejected",
               "--dry-run")
    assert dry.returncode == 0 and f"would replay {len(rejected)} of {len(rejected)}" in dry.stderr, dry.stderr
    assert len(read_all(kafka_bootstrap, clean)) == len(expected), "a dry run must send nothing"

    for round_ in (1, 2):  # twice: the second replay must not add a row
        done = _cli("replay", "--bootstrap-servers", kafka_bootstrap, "--topic", dlq, "--reason",
                    "database_rejected", "--stage", "loader")
        assert done.returncode == 0, done.stderr
        assert f"replayed {len(rejected)} of {len(rejected)}" in done.stderr and f"to {clean}" in done.stderr
        err = run_until_caught_up(cmd)
        assert_exact(db, expected)
        loaded = "loaded {:,} rows".format(len(rejected) if round_ == 1 else 0)
        assert loaded in err, err[-1500:]

    replayed = [m for m in read_all(kafka_bootstrap, clean) if m.headers()]
    assert len(replayed) == 2 * len(rejected)
    origins = {dict(m.headers())["ecomlogs.replayed_from"].decode() for m in replayed}
    assert len(origins) == len(rejected) and all(o.startswith(f"{dlq}/") for o in origins)


def test_inspect_and_replay_filters_from_python(kafka_bootstrap: str) -> None:
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    ecomlogs.produce(2000, bootstrap_servers=kafka_bootstrap, topic=raw, seed=62)
    st = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean, dlq_topic=dlq,
                          group_id=unique("g"), until_caught_up=True)
    report = ecomlogs.dlq_inspect(bootstrap_servers=kafka_bootstrap, topic=dlq, samples=2)
    assert report.scanned == report.total == st.invalid
    assert {r: n for (stage, r), n in report.counts.items() if stage == "processor"} == st.by_reason
    assert all(len([s for s in report.samples if s.reason == r]) == min(2, n) for r, n in st.by_reason.items())
    one = ecomlogs.dlq_inspect(bootstrap_servers=kafka_bootstrap, topic=dlq, reason="missing_currency",
                               samples=0)
    assert one.total == st.by_reason["missing_currency"] and one.samples == []
    assert ecomlogs.dlq_inspect(bootstrap_servers=kafka_bootstrap, topic=dlq, since="0s").total == 0
    letters = ecomlogs.dead_letters(bootstrap_servers=kafka_bootstrap, topic=dlq, stage="processor", limit=5)
    assert len(letters) == 5 and all(d.source_topic == raw and d.value for d in letters)
    dry = ecomlogs.dlq_replay(bootstrap_servers=kafka_bootstrap, topic=dlq, reason=["missing_currency"],
                              dry_run=True)
    assert (dry.matched, dry.replayed, dry.by_topic) == (one.total, one.total, {raw: one.total})


def test_a_missing_dead_letter_topic_is_one_line(kafka_bootstrap: str) -> None:
    p = _cli("inspect", "--bootstrap-servers", kafka_bootstrap, "--topic", unique("nope"))
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr, p.stderr
