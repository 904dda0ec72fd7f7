"""Helpers for integration tests: fresh topic names and an independent confluent-kafka reader."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from confluent_kafka import Consumer, TopicPartition


ROOT = Path(__file__).resolve().parent.parent


def start(cmd: list[str], capture: bool = True) -> subprocess.Popen:
    """Starts a stage in the repo root; stderr is captured (text) unless ``capture`` is False."""
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if capture else subprocess.DEVNULL, text=True)


def finish(proc: subprocess.Popen, sig: Optional[int] = None, timeout: float = 300) -> tuple[int, str]:
    """Optionally signals ``proc``, then waits for it (killing it if it overruns); returns (exit code,
    stderr)."""
    try:
        if sig is not None:
            proc.send_signal(sig)
        _out, err = proc.communicate(timeout=timeout)
        return proc.returncode, err or ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def read_all(
    bootstrap: str,
    topic: str,
    expected: Optional[int] = None,
    timeout_s: float = 60.0,
    idle_s: float = 3.0,
    isolation: str = "read_uncommitted",
    partitions: int = 3,
) -> list[Any]:
    """Reads a topic from the start with manual assignment (no group join), until ``expected`` messages
    arrived or nothing came for ``idle_s`` seconds; never longer than ``timeout_s``."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            if expected is not None and len(out) >= expected:
                # Keep reading briefly so that extra (duplicate) messages would be seen too.
                idle_s = min(idle_s, 1.0)
            batch = c.consume(num_messages=10000, timeout=0.5)
            good = [m for m in batch if m.error() is None]
            out.extend(good)
            if good:
                last = time.monotonic()
            elif time.monotonic() - last > idle_s and (expected is None or len(out) >= expected):
                break
        return out
    finally:
        c.close()


_ABORT_FILTERING: dict[str, bool] = {}


def broker_hides_aborted_transactions(bootstrap: str) -> bool:
    """Probes whether read_committed consumers of this broker skip aborted transactions, as Apache Kafka
    does. The Tansu build of the dev stack does not (it sends no aborted-transaction list in fetch
    responses), so exactly-once tests assert the strongest property this broker lets a client observe."""
    if bootstrap not in _ABORT_FILTERING:
        import ecomlogs
        from confluent_kafka import Producer

        topic = unique("abort_probe")
        ecomlogs.ensure_topics([topic], bootstrap_servers=bootstrap, partitions=1)
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique("probe")})
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(topic, value=b"aborted")
        p.flush(30)
        p.abort_transaction(30)
        p.begin_transaction()
        p.produce(topic, value=b"committed")
        p.commit_transaction(30)
        seen = [m.value() for m in read_all(bootstrap, topic, expected=1, isolation="read_committed",
                                            partitions=1, idle_s=2)]
        _ABORT_FILTERING[bootstrap] = seen == [b"committed"]
    return _ABORT_FILTERING[bootstrap]
