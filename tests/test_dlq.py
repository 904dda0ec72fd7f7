"""Dead letters you can act on: inspect by stage and reason, replay to the source topic once the cause is
fixed, exactly once in the table however often it is replayed (real broker, real PostgreSQL)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg2

import ecomlogs
from helpers import (ROOT, assert_exact, loader_cmd, produce_clean, read_all, row_count, run_until_caught_up, start,
                     unique, wait_for)


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

    found = _cli("inspect", "--bootstrap-servers", kafka_bootstrap, "--dlq-topic", dlq, "--json")
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    assert report["counts"] == [{"stage": "loader", "reason": "database_rejected", "count": len(rejected)}]
    sample = report["samples"][0]
    assert sample["source_topic"] == clean and "dba_rule" in sample["detail"]
    assert sample["headers"]["sqlstate"] == "23514"

    _sql(db, "ALTER TABLE kafka_events_silver DROP CONSTRAINT dba_rule")
    dry = _cli("replay", "--bootstrap-servers", kafka_bootstrap, "--topic", dlq, "--reason", "database_rejected",
               "--dry-run")  # --topic: the old name, kept as an alias
    assert dry.returncode == 0 and f"would replay {len(rejected)} of {len(rejected)}" in dry.stderr, dry.stderr
    assert len(read_all(kafka_bootstrap, clean)) == len(expected), "a dry run must send nothing"

    replay = ("replay", "--bootstrap-servers", kafka_bootstrap, "--dlq-topic", dlq, "--reason", "database_rejected",
              "--stage", "loader")
    # The first replay sends every one; the same command again resumes after them and sends nothing; one
    # that starts over (--from-beginning) sends them all again, and the table still holds each row once.
    for round_, flags, sent in ((1, (), len(rejected)), (2, (), 0), (3, ("--from-beginning",), len(rejected))):
        done = _cli(*replay, *flags)
        assert done.returncode == 0, done.stderr
        assert f"replayed {sent} of {sent}" in done.stderr, done.stderr
        assert (f"to {clean}" in done.stderr) == (sent > 0), done.stderr
        assert ("resumed where the last replay stopped" in done.stderr) == (round_ == 2), done.stderr
        err = run_until_caught_up(cmd)
        assert_exact(db, expected)
        loaded = "loaded {:,} rows".format(len(rejected) if round_ == 1 else 0)
        assert loaded in err, err[-1500:]

    # Every clean record names its contract (ecomlogs.contract); only replayed ones carry a lineage.
    replayed = [m for m in read_all(kafka_bootstrap, clean) if "ecomlogs.replayed_from" in dict(m.headers() or [])]
    assert len(replayed) == 2 * len(rejected)
    origins = {dict(m.headers())["ecomlogs.replayed_from"].decode() for m in replayed}
    assert len(origins) == len(rejected) and all(o.startswith(f"{dlq}/") for o in origins)
    assert {dict(m.headers())["ecomlogs.replay_generation"] for m in replayed} == {b"1"}


def test_inspect_and_replay_filters_from_python(kafka_bootstrap: str) -> None:
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    ecomlogs.produce(2000, bootstrap_servers=kafka_bootstrap, topic=raw, seed=62)
    st = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean, dlq_topic=dlq,
                          group_id=unique("g"), until_caught_up=True)
    report = ecomlogs.dlq_inspect(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq, samples=2)
    assert report.scanned == report.total == st.invalid
    assert {r: n for (stage, r), n in report.counts.items() if stage == "processor"} == st.by_reason
    assert all(len([s for s in report.samples if s.reason == r]) == min(2, n) for r, n in st.by_reason.items())
    one = ecomlogs.dlq_inspect(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq, reason="missing_currency",
                               samples=0)
    assert one.total == st.by_reason["missing_currency"] and one.samples == []
    assert ecomlogs.dlq_inspect(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq, since="0s").total == 0
    letters = ecomlogs.dead_letters(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq, stage="processor", limit=5)
    assert len(letters) == 5 and all(d.source_topic == raw and d.value for d in letters)
    dry = ecomlogs.dlq_replay(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq, reason=["missing_currency"],
                              dry_run=True)
    assert (dry.matched, dry.replayed, dry.by_topic) == (one.total, one.total, {raw: one.total})


def test_a_missing_dead_letter_topic_is_one_line(kafka_bootstrap: str) -> None:
    p = _cli("inspect", "--bootstrap-servers", kafka_bootstrap, "--topic", unique("nope"))
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr, p.stderr


def _dead_letters(bootstrap: str, dlq: str) -> list[Any]:
    return read_all(bootstrap, dlq, timeout_s=60)


def _generation(m: Any) -> int:
    h = dict(m.headers() or [])
    return int(h.get("ecomlogs.replay_generation", b"1")) if "ecomlogs.replayed_from" in h else 0


def test_a_replay_cannot_feed_itself_while_the_processor_runs(kafka_bootstrap: str) -> None:
    """The reproduction of the loop: still-invalid dead letters replayed with --until-idle while a processor
    runs. The replay ends by itself, at most doubles the dead letters (each original once more, with its
    lineage), and a second replay adds no new generation."""
    raw, clean, dlq, group = unique("raw"), unique("clean"), unique("dlq"), unique("g")
    ecomlogs.produce(400, bootstrap_servers=kafka_bootstrap, topic=raw, seed=63)
    st = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean, dlq_topic=dlq,
                          group_id=group, until_caught_up=True)
    originals = st.invalid
    assert originals > 50
    processor = start([sys.executable, "streamProcessor.py", "--bootstrap-servers", kafka_bootstrap, "--input-topic",
                       raw, "--output-topic", clean, "--dlq-topic", dlq, "--group-id", group], capture=False)
    try:
        began = time.monotonic()
        first = _cli("replay", "--bootstrap-servers", kafka_bootstrap, "--dlq-topic", dlq, "--until-idle", "5")
        took = time.monotonic() - began
        assert first.returncode == 0, first.stderr
        assert f"replayed {originals} of" in first.stderr, first.stderr
        assert took < 60, f"the replay took {took:.0f} s"
        # The processor dead-letters every replayed record again, with its lineage.
        letters = wait_for("the replayed records to be dead-lettered again",
                           lambda: (d := _dead_letters(kafka_bootstrap, dlq)) and len(d) >= 2 * originals and d)
        second = _cli("replay", "--bootstrap-servers", kafka_bootstrap, "--dlq-topic", dlq, "--until-idle", "3")
        assert second.returncode == 0 and "replayed 0 of" in second.stderr, second.stderr
        assert f"{originals} made from replayed records left in place" not in second.stderr  # resumed past them
        wait_for("the processor to commit the end of its input", lambda: all(
            committed is not None and committed >= high for _p, _low, high, committed in
            ecomlogs._core.topic_offsets(raw, group_id=group, bootstrap_servers=kafka_bootstrap)))
        letters = _dead_letters(kafka_bootstrap, dlq)
    finally:
        processor.terminate()
        processor.wait(timeout=60)
    assert len(letters) == 2 * originals, (len(letters), originals)
    generations = [_generation(m) for m in letters]
    assert generations.count(0) == originals and generations.count(1) == originals
    # Every generation-1 dead letter names an original it was replayed from.
    origins = {dict(m.headers())["ecomlogs.replayed_from"].decode() for m in letters if _generation(m)}
    assert len(origins) == originals
    assert origins == {f"{dlq}/{m.partition()}/{m.offset()}" for m in letters if not _generation(m)}


def test_include_replayed_sends_each_lineage_once_more(kafka_bootstrap: str) -> None:
    raw, clean, dlq, group = unique("raw"), unique("clean"), unique("dlq"), unique("g")
    ecomlogs.produce(200, bootstrap_servers=kafka_bootstrap, topic=raw, seed=64)
    process = dict(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean, dlq_topic=dlq,
                   group_id=group, until_caught_up=True)
    originals = ecomlogs.process(**process).invalid
    first = ecomlogs.dlq_replay(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq)
    assert (first.replayed, first.resumed) == (originals, False)
    assert ecomlogs.process(**process).invalid == originals  # still invalid: dead letters of generation 1
    dry = ecomlogs.dlq_replay(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq, include_replayed=True, dry_run=True)
    assert (dry.replayed, dry.resumed, dry.from_replays) == (originals, True, 0)
    again = ecomlogs.dlq_replay(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq, include_replayed=True)
    assert again.replayed == dry.replayed and again.by_topic == dry.by_topic == {raw: originals}
    assert again.ranges == dry.ranges
    assert ecomlogs.process(**process).invalid == originals
    report = ecomlogs.dlq_inspect(bootstrap_servers=kafka_bootstrap, dlq_topic=dlq)
    assert (report.total, report.from_replays) == (3 * originals, 2 * originals)
    assert sorted(_generation(m) for m in _dead_letters(kafka_bootstrap, dlq)).count(2) == originals


def test_a_replay_killed_midway_continues_where_it_stopped(kafka_bootstrap: str) -> None:
    """kill -9 during a long replay; the same command again sends only what the first did not commit (at
    most the last second's worth), and every dead letter is replayed at least once."""
    raw, dlq = unique("raw"), unique("dlq")
    n = 100_000
    ecomlogs.produce(n, bootstrap_servers=kafka_bootstrap, topic=raw, seed=65, invalid_ratio=1.0)
    st = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=unique("clean"),
                          dlq_topic=dlq, group_id=unique("g"), until_caught_up=True)
    assert st.invalid == n
    # The replayed records go back to `raw`, whose size tells what was sent.
    # Paced (5 s for all), so the first checkpoint (after a second) comes well before the end: unpaced,
    # the whole topic sometimes went out before it.
    replay = [sys.executable, "-m", "ecomlogs", "dlq", "replay", "--bootstrap-servers", kafka_bootstrap,
              "--dlq-topic", dlq, "--rate", "20000"]
    started = time.monotonic()
    proc = start(replay, capture=False)
    try:
        group_has_position = lambda: any(  # noqa: E731
            c is not None and c > 0 for *_r, c in
            ecomlogs._core.topic_offsets(dlq, group_id="ecomlogs-dlq-replay", bootstrap_servers=kafka_bootstrap))
        wait_for("the replay's first checkpoint", group_has_position, timeout_s=120)
        assert proc.poll() is None, "the replay finished before it could be killed: make the topic larger"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ran_s = time.monotonic() - started
    sent_first = len(read_all(kafka_bootstrap, raw, timeout_s=120)) - n
    assert 0 < sent_first < n
    assert sent_first <= 20_000 * ran_s + 1, "the rate holds"
    second = subprocess.run(replay, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "resumed where the last replay stopped" in second.stderr, second.stderr
    resent = int(second.stderr.split("replayed ", 1)[1].split(" ", 1)[0].replace(",", ""))
    assert resent < n
    replayed = [m for m in read_all(kafka_bootstrap, raw, timeout_s=120) if m.headers()]
    origins = {dict(m.headers())["ecomlogs.replayed_from"] for m in replayed}
    assert len(origins) == n, "every dead letter is replayed at least once"
    # Sent twice: only what the killed run sent after its last checkpoint (a second's worth at most).
    assert len(replayed) - n == sent_first + resent - n <= sent_first
