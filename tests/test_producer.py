"""producer.py against the real broker, read back with an independent client (confluent-kafka)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ecomlogs
from helpers import finish, read_all, start, unique

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw  # type: ignore[arg-type]
    )


def test_round_trip_10000(kafka_bootstrap: str) -> None:
    topic = unique("raw_rt")
    p = run(["producer.py", "--count", "10000", "--interval-ms", "0", "--seed", "5",
             "--topic", topic, "--bootstrap-servers", kafka_bootstrap])
    assert p.returncode == 0, p.stderr
    assert "produced 10,000 events" in p.stderr
    msgs = read_all(kafka_bootstrap, topic, expected=10000)
    assert len(msgs) == 10000
    ids = set()
    for m in msgs:
        e = json.loads(m.value())
        assert set(e) <= {"event_id", "customer_id", "event_type", "amount", "currency", "timestamp", "is_valid"}
        assert {"event_id", "event_type", "timestamp", "is_valid"} <= set(e)
        if e.get("customer_id"):
            assert m.key() == e["customer_id"].encode()
        else:
            assert m.key() is None
        ids.add(e["event_id"])
    assert len(ids) == 10000
    verdicts = ecomlogs.validate_batch([m.value() for m in msgs])
    invalid = sum(not v.valid for v in verdicts)
    assert 0.20 < invalid / 10000 < 0.30


def test_paced_mode_logs_each_event_and_ctrl_c_exits_0(kafka_bootstrap: str) -> None:
    topic = unique("raw_paced")
    proc = start([sys.executable, "producer.py", "--interval-ms", "200", "--topic", topic,
                  "--bootstrap-servers", kafka_bootstrap])
    time.sleep(3)
    code, err = finish(proc, signal.SIGINT, timeout=30)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "ecomlogs.producer: produced {" in ln]
    assert 5 <= len(lines) <= 20, err
    assert "stopped by signal" in err
    # Everything logged was flushed to the broker before exit.
    assert len(read_all(kafka_bootstrap, topic, expected=len(lines))) == len(lines)


def test_sigterm_also_flushes_and_exits_0(kafka_bootstrap: str) -> None:
    topic = unique("raw_term")
    proc = start([sys.executable, "producer.py", "--rate", "20000", "--topic", topic, "--quiet",
                  "--bootstrap-servers", kafka_bootstrap])
    time.sleep(3)
    code, err = finish(proc, signal.SIGTERM, timeout=60)
    assert code == 0, err
    summary = [ln for ln in err.splitlines() if ln.startswith("produced ")]
    assert summary, err
    n = int(summary[-1].split()[1].replace(",", ""))
    assert n > 0
    assert len(read_all(kafka_bootstrap, topic, expected=n, timeout_s=120)) == n


def test_unreachable_broker_is_one_readable_line() -> None:
    p = run(["producer.py", "--count", "1", "--bootstrap-servers", "127.0.0.1:1"], timeout=90)
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) <= 2, p.stderr
    assert "error:" in lines[-1] and "127.0.0.1:1" in lines[-1]
    assert "Traceback" not in p.stderr and "panicked" not in p.stderr


@pytest.mark.parametrize("flag", [["--count", "-1"], ["--invalid-ratio", "2"], ["--interval-ms", "x"],
                                  ["--extra-config", "novalue"]])
def test_bad_flags_are_one_line(flag: list[str]) -> None:
    p = run(["producer.py", *flag, "--bootstrap-servers", "127.0.0.1:1"], timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "error" in p.stderr.strip().splitlines()[-1]


def test_help_shows_defaults_and_env() -> None:
    p = run(["producer.py", "--help"])
    assert p.returncode == 0
    for text in ("KAFKA_BOOTSTRAP_SERVERS", "localhost:29092", "raw_events", "500", "--seed", "--extra-config"):
        assert text in p.stdout


def test_python_api_produce(kafka_bootstrap: str) -> None:
    topic = unique("raw_api")
    seen: list[ecomlogs.types.ProduceStats] = []
    stats = ecomlogs.produce(3000, bootstrap_servers=kafka_bootstrap, topic=topic, seed=1, progress=seen.append)
    assert stats.produced == stats.delivered == 3000
    assert stats.valid + stats.invalid == 3000 and not stats.interrupted
    # The last progress report is the end state, the very stats returned (typed and frozen).
    assert seen and seen[-1] == stats and seen[-1].delivered == 3000
    assert len(read_all(kafka_bootstrap, topic, expected=3000)) == 3000
