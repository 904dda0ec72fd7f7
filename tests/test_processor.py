"""streamProcessor.py against the real broker: every record to exactly one place, with reasons; crashes and
rebalances lose nothing; exactly-once mode duplicates nothing under read_committed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pytest
from confluent_kafka import Producer

import ecomlogs
from helpers import (broker_hides_aborted_transactions, finish, read_all, run_until_caught_up, run_until_idle, start,
                     topic_size, unique, wait_for, wait_group_empty)

ROOT = Path(__file__).resolve().parent.parent

GOOD = {
    "customer_id": "CUST-00042",
    "event_type": "PURCHASE",
    "amount": 129.99,
    "currency": "USD",
    "timestamp": "2026-11-26T13:18:27.123Z",
    "is_valid": True,
}


def good(i: int, **changes: Any) -> dict:
    d = dict(GOOD, event_id=f"evt-{i:06d}")
    for k, v in changes.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def produce_raw(bootstrap: str, topic: str, records: list[tuple[Optional[bytes], Optional[bytes]]]) -> None:
    ecomlogs.ensure_topics([topic], bootstrap_servers=bootstrap)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, value in records:
        while True:
            try:
                p.produce(topic, value=value, key=key)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def processor(bootstrap: str, raw: str, clean: str, dlq: str, group: str, *extra: str) -> list[str]:
    return [sys.executable, "streamProcessor.py", "--bootstrap-servers", bootstrap, "--input-topic", raw,
            "--output-topic", clean, "--dlq-topic", dlq, "--group-id", group, *extra]




def headers(m: Any) -> dict[str, str]:
    return {k: (v.decode() if v is not None else None) for k, v in (m.headers() or [])}


def test_known_mixture_gives_exact_clean_and_dead_letter_sets(kafka_bootstrap: str) -> None:
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    valid = [good(i) for i in range(200)]
    cases: list[tuple[Optional[bytes], Optional[bytes], str]] = []
    for i, v in enumerate(valid):
        cases.append((v["customer_id"].encode(), json.dumps(v).encode(), "valid"))
    bad: list[tuple[Optional[bytes], str]] = [
        (json.dumps(good(1000, customer_id=...)).encode(), "missing_customer_id"),
        (json.dumps(good(1001, customer_id="")).encode(), "missing_customer_id"),
        (json.dumps(good(1002, event_type="REFUND")).encode(), "invalid_event_type"),
        (json.dumps(good(1003, amount=0)).encode(), "non_positive_amount"),
        (json.dumps(good(1004, amount=-1.25)).encode(), "non_positive_amount"),
        (json.dumps(good(1005, amount=...)).encode(), "missing_amount"),
        (json.dumps(good(1006, currency=...)).encode(), "missing_currency"),
        (json.dumps(good(1007, is_valid=False)).encode(), "not_marked_valid"),
        (json.dumps(good(1008, timestamp="soon")).encode(), "bad_timestamp"),
        (json.dumps(good(1009, amount=1e12)).encode(), "amount_out_of_range"),
        (json.dumps(good(1010, customer_id="x" * 300)).encode(), "field_too_long"),
        (json.dumps(good(1011, currency="a\u0000")).encode(), "nul_character"),
        (json.dumps(good(1012, amount="12")).encode(), "wrong_type"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"", "empty_value"),
        (None, "empty_value"),
        (b"[1,2,3]", "not_an_object"),
        (b'{"amount": NaN}', "malformed_json"),
        (json.dumps(good(1013)).replace("129.99", "1e999999").encode(), "amount_out_of_range"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "missing_customer_id"),
        (b"[" * 100_000 + b"]" * 100_000, "not_an_object"),
        (b"x" * 990_000, "malformed_json"),
    ]
    for value, reason in bad:
        cases.append((b"bad-key", value, reason))
    # Interleave so that every partition sees a mixture.
    cases = cases[::2] + cases[1::2]
    produce_raw(kafka_bootstrap, raw, [(k, v) for k, v, _ in cases])

    out = run_until_caught_up(processor(kafka_bootstrap, raw, clean, dlq, unique("g")))
    assert f"processed {len(cases):,} events" in out, out

    clean_msgs = read_all(kafka_bootstrap, clean, expected=len(valid))
    assert sorted(json.loads(m.value())["event_id"] for m in clean_msgs) == sorted(v["event_id"] for v in valid)
    for m in clean_msgs:
        e = json.loads(m.value())
        assert m.key() == b"CUST-00042"
        assert e == dict(GOOD, event_id=e["event_id"])  # canonical form keeps values exact

    dlq_msgs = read_all(kafka_bootstrap, dlq, expected=len(bad))
    assert len(dlq_msgs) == len(bad)
    got = Counter((m.value(), headers(m)["reason"]) for m in dlq_msgs)
    want = Counter(bad)  # values untouched: an empty value stays empty, a null stays null
    assert got == want
    for m in dlq_msgs:
        h = headers(m)
        assert m.key() == b"bad-key"
        assert h["source.topic"] == raw and h["stage"] == "processor"
        assert int(h["source.partition"]) in (0, 1, 2) and int(h["source.offset"]) >= 0
        assert h["detail"]
    offsets = {(headers(m)["source.partition"], headers(m)["source.offset"]) for m in dlq_msgs}
    assert len(offsets) == len(bad)


def _produce_events(bootstrap: str, topic: str, n: int, seed: int) -> None:
    stats = ecomlogs.produce(n, bootstrap_servers=bootstrap, topic=topic, seed=seed)
    assert stats.delivered == n


def _expected(bootstrap: str, raw: str, n: int) -> tuple[set[str], int]:
    msgs = read_all(bootstrap, raw, expected=n, timeout_s=120)
    assert len(msgs) == n
    verdicts = ecomlogs.validate_batch([m.value() for m in msgs])
    valid_ids = {json.loads(m.value())["event_id"] for m, v in zip(msgs, verdicts) if v.valid}
    return valid_ids, sum(not v.valid for v in verdicts)


def _wait_for_output(clean: str, bootstrap: str, at_least: int = 1000) -> None:
    """Waits until the processor has written some output (its group joined, its batches committing),
    counting records as they arrive (the dev broker's watermarks lag behind its records)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("w"), "isolation.level": "read_uncommitted"})
    seen = 0

    def written() -> bool:
        nonlocal seen
        if not c.assignment():
            if clean not in c.list_topics(timeout=5).topics:
                return False  # the processor has not created it yet
            c.assign([TopicPartition(clean, p, 0) for p in range(3)])
        seen += sum(1 for m in c.consume(num_messages=10000, timeout=0.2) if m.error() is None)
        return seen > at_least

    try:
        wait_for(f"output in {clean}", written, timeout_s=60)
    finally:
        c.close()


def _kill_mid_stream(cmd: list[str], clean: str, bootstrap: str) -> None:
    """Starts the processor, waits until some output exists, then SIGKILLs it."""
    proc = start(cmd, capture=False)
    try:
        _wait_for_output(clean, bootstrap)
    finally:
        finish(proc, signal.SIGKILL, timeout=30)


@pytest.mark.parametrize("workers", [1, 3])
def test_kill_9_at_least_once_loses_nothing(kafka_bootstrap: str, workers: int) -> None:
    raw, clean, dlq, group = unique("raw"), unique("clean"), unique("dlq"), unique("g")
    n = 300_000
    _produce_events(kafka_bootstrap, raw, n, seed=11)
    valid_ids, invalid = _expected(kafka_bootstrap, raw, n)
    cmd = processor(kafka_bootstrap, raw, clean, dlq, group, "--quiet", "--batch-max", "5000",
                    "--workers", str(workers))
    _kill_mid_stream(cmd, clean, kafka_bootstrap)
    # The killed member holds its partitions until its session times out (6 s).
    wait_group_empty(kafka_bootstrap, group)
    run_until_caught_up(cmd)
    clean_ids = [json.loads(m.value())["event_id"] for m in read_all(kafka_bootstrap, clean, timeout_s=180)]
    assert set(clean_ids) == valid_ids  # nothing missing (duplicates allowed at-least-once)
    dlq_sources = {(headers(m)["source.partition"], headers(m)["source.offset"])
                   for m in read_all(kafka_bootstrap, dlq, timeout_s=180)}
    assert len(dlq_sources) == invalid


def test_kill_9_exactly_once_neither_loses_nor_duplicates(kafka_bootstrap: str) -> None:
    raw, clean, dlq, group = unique("raw"), unique("clean"), unique("dlq"), unique("g")
    n = 300_000
    _produce_events(kafka_bootstrap, raw, n, seed=12)
    valid_ids, invalid = _expected(kafka_bootstrap, raw, n)
    # One consumer: the bound below is one open transaction per killed consumer.
    cmd = processor(kafka_bootstrap, raw, clean, dlq, group, "--quiet", "--batch-max", "5000", "--workers", "1",
                    "--exactly-once", "--transactional-id", f"{group}-0")
    _kill_mid_stream(cmd, clean, kafka_bootstrap)
    # The killed member holds its partitions until its session times out (6 s).
    wait_group_empty(kafka_bootstrap, group)
    run_until_caught_up(cmd)
    committed = read_all(kafka_bootstrap, clean, timeout_s=180, isolation="read_committed")
    clean_ids = [json.loads(m.value())["event_id"] for m in committed]
    dlq_msgs = read_all(kafka_bootstrap, dlq, timeout_s=180, isolation="read_committed")
    dlq_sources = [(headers(m)["source.partition"], headers(m)["source.offset"]) for m in dlq_msgs]
    assert set(clean_ids) == valid_ids  # nothing missing
    assert len(set(dlq_sources)) == invalid
    if broker_hides_aborted_transactions(kafka_bootstrap):
        assert len(clean_ids) == len(valid_ids)  # no duplicates
        assert len(dlq_sources) == invalid
    else:
        # This broker shows aborted transactions to read_committed readers, so the one transaction that
        # the kill left open (at most one batch) may be seen twice; every committed one exactly once.
        assert len(clean_ids) - len(valid_ids) <= 5000
        assert len(dlq_sources) - invalid <= 5000
        # ...and a clean restart of an exactly-once processor never repeats anything.
        raw2, clean2, dlq2, group2 = unique("raw"), unique("clean"), unique("dlq"), unique("g")
        _produce_events(kafka_bootstrap, raw2, 30_000, seed=16)
        ids2, invalid2 = _expected(kafka_bootstrap, raw2, 30_000)
        eos = ["--quiet", "--batch-max", "5000", "--exactly-once", "--transactional-id", f"{group2}-0"]
        run_until_caught_up(processor(kafka_bootstrap, raw2, clean2, dlq2, group2, *eos))
        _produce_events(kafka_bootstrap, raw2, 30_000, seed=17)
        ids3, invalid3 = _expected(kafka_bootstrap, raw2, 60_000)
        run_until_caught_up(processor(kafka_bootstrap, raw2, clean2, dlq2, group2, *eos))
        got = [json.loads(m.value())["event_id"]
               for m in read_all(kafka_bootstrap, clean2, expected=len(ids3), isolation="read_committed")]
        assert len(got) == len(ids3) and set(got) == ids3
        assert len(read_all(kafka_bootstrap, dlq2, expected=invalid3, isolation="read_committed")) == invalid3


def test_two_instances_split_partitions_and_a_rebalance_loses_nothing(kafka_bootstrap: str) -> None:
    raw, clean, dlq, group = unique("raw"), unique("clean"), unique("dlq"), unique("g")
    # Enough that the first one is still busy well after the second has joined. (With 200,000 the first
    # sometimes finished just as the second was joining; it left the group with an empty share, and the dev
    # broker then never answered the second one's join: seen on Tansu in about one run of four, with builds
    # before and after this session's changes alike; members leaving a settled group are handled.)
    n = 600_000
    _produce_events(kafka_bootstrap, raw, n, seed=13)
    valid_ids, invalid = _expected(kafka_bootstrap, raw, n)
    cmd = processor(kafka_bootstrap, raw, clean, dlq, group, "--batch-max", "2000", "--workers", "1",
                    "--until-caught-up")
    first = start(cmd)
    # The first one has joined and is working when the second one arrives: a rebalance.
    _wait_for_output(clean, kafka_bootstrap)
    second = start(cmd)
    outs = []
    for p in (first, second):
        code, err = finish(p, timeout=240)
        assert code == 0, err
        outs.append(err)
    assert any("revoked" in o for o in outs), outs[0][-2000:]
    clean_ids = [json.loads(m.value())["event_id"] for m in read_all(kafka_bootstrap, clean, timeout_s=180)]
    assert set(clean_ids) == valid_ids
    dlq_sources = {(headers(m)["source.partition"], headers(m)["source.offset"])
                   for m in read_all(kafka_bootstrap, dlq, timeout_s=180)}
    assert len(dlq_sources) == invalid


def test_python_api_returns_counts(kafka_bootstrap: str) -> None:
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    _produce_events(kafka_bootstrap, raw, 5000, seed=14)
    valid_ids, invalid = _expected(kafka_bootstrap, raw, 5000)
    stats = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean,
                             dlq_topic=dlq, group_id=unique("g"), until_caught_up=True, workers=3)
    assert stats.consumed == 5000 and stats.valid == len(valid_ids) and stats.invalid == invalid
    assert sum(stats.by_reason.values()) == invalid
    assert not stats.interrupted


def test_sigterm_finishes_the_batch_commits_and_exits_0(kafka_bootstrap: str) -> None:
    raw, clean, dlq, group = unique("raw"), unique("clean"), unique("dlq"), unique("g")
    _produce_events(kafka_bootstrap, raw, 20_000, seed=15)
    cmd = processor(kafka_bootstrap, raw, clean, dlq, group)
    proc = start(cmd)
    wait_for("every event processed", lambda: topic_size(kafka_bootstrap, clean) + topic_size(kafka_bootstrap, dlq)
             >= 20_000, every_s=0.5)
    code, err = finish(proc, signal.SIGTERM, timeout=60)
    assert code == 0, err
    assert "stopped by signal" in err and "processed 20,000 events" in err
    # Everything was committed: a second run of the same group finds nothing left to do.
    again = run_until_caught_up(cmd)
    assert "processed 0 events" in again, again


def test_several_consumers_finish_together_when_the_stage_is_idle(kafka_bootstrap: str) -> None:
    """With --until-idle the idle exit is the stage's, not each consumer's: a consumer whose partitions go
    quiet first stays in the group (no rebalance, no partition handed over) until the whole stage is idle."""
    raw, clean, dlq, group = unique("raw"), unique("clean"), unique("dlq"), unique("g")
    _produce_events(kafka_bootstrap, raw, 30_000, seed=16)
    err = run_until_idle(processor(kafka_bootstrap, raw, clean, dlq, group, "--workers", "3", "--batch-max", "2000"),
                         idle=2.0)
    lines = err.splitlines()
    finishing = [i for i, line in enumerate(lines) if "no input for" in line and "finishing" in line]
    assert len(finishing) == 1, err[-3000:]
    assigned = [i for i, line in enumerate(lines) if "ecomlogs.kafka: assigned" in line]
    revoked = [i for i, line in enumerate(lines) if "ecomlogs.kafka: revoked" in line]
    # Partitions change hands only while the group forms; after that nobody leaves until the idle verdict,
    # and then every partition is given up.
    assert assigned and all(i < max(assigned) or i > finishing[0] for i in revoked), err[-3000:]
    assert sum(lines[i].count(f"{raw}[") for i in revoked if i > finishing[0]) == 3, err[-3000:]
    assert "processed 30,000 events" in err
