"""Input that cannot be read fails loudly: a batch that does not decompress (in zstd, in gzip), or an
uncompressed one whose records do not parse (librdkafka fetches that one again and again and says
nothing), written into the middle of a partition with a Produce request of our own (see raw_produce). The
stages log what and where (topic, partition, offset), never report an idle or caught-up success while
it blocks the partition, and end with exit 1 once it has lasted --unreadable-timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Producer

import ecomlogs
from helpers import ROOT, loader_cmd, read_all, rows, unique
from raw_produce import CODEC_GZIP, CODEC_NONE, CODEC_ZSTD, produce_batch, record_batch

# (codec written into the batch header, payload, librdkafka's code, our words for it)
BAD = {
    "corrupt zstd": (CODEC_ZSTD, b"\x28\xb5\x2f\xfd not zstd at all", "_BAD_COMPRESSION", "does not decompress"),
    "corrupt gzip": (CODEC_GZIP, b"\x1f\x8b\x08\x00 not gzip at all", "_BAD_COMPRESSION", "does not decompress"),
    "garbled records": (CODEC_NONE, b"\x00\xff" * 12, "_BAD_MSG", "the client reports no error"),
}
TIMEOUT_S = 4.0


def poisoned_topic(bootstrap: str, values: list[bytes], bad: tuple[int, bytes, str, str]) -> tuple[str, int]:
    """A 3-partition topic: the first half of ``values`` spread over partitions 0 and 2; in partition 1 the
    next quarter, the bad batch, then the last quarter. Returns (topic, offset of the bad batch)."""
    topic = unique("poisoned")
    ecomlogs.ensure_topics([topic], bootstrap_servers=bootstrap, partitions=3)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    spread, before, after = split(values)
    for i, v in enumerate(spread):
        p.produce(topic, value=v, partition=(0, 2)[i % 2])
    for v in before:
        p.produce(topic, value=v, partition=1)
    assert p.flush(30) == 0
    codec, payload, _, _ = bad
    offset = produce_batch(bootstrap, topic, 1, record_batch(codec, 3, payload))
    for v in after:
        p.produce(topic, value=v, partition=1)
    assert p.flush(30) == 0
    return topic, offset


def split(values: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(spread over partitions 0 and 2, before the bad batch in 1, after it in 1)."""
    half, three_quarters = len(values) // 2, len(values) * 3 // 4
    return values[:half], values[half:three_quarters], values[three_quarters:]


def event_ids(values: list[bytes]) -> set[str]:
    return {json.loads(v)["event_id"] for v in values}


def last_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr and "panicked" not in stderr, stderr[-3000:]
    return lines[-1]


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("finish", [["--until-idle", "1"], ["--until-caught-up"]])
def test_the_processor_stops_with_what_and_where(kafka_bootstrap: str, kind: str, finish: list[str]) -> None:
    raw = ecomlogs.generate_events_json(400, invalid_ratio=0.0, seed=5)
    topic, offset = poisoned_topic(kafka_bootstrap, raw, BAD[kind])
    clean = unique("clean")
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "streamProcessor.py", "--bootstrap-servers", kafka_bootstrap, "--input-topic", topic,
         "--output-topic", clean, "--dlq-topic", unique("dlq"), "--group-id", unique("g"),
         "--unreadable-timeout", str(TIMEOUT_S), *finish],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stderr[-3000:]
    line = last_line(p.stderr)
    _, _, code, words = BAD[kind]
    assert f"{topic}[1] at offset {offset}" in line and code in line and words in line, line
    # The first attempt was logged at once, with the place, and the stage gave up after the timeout.
    assert f"WARNING ecomlogs.processor: cannot read {topic}[1] at offset {offset}" in p.stderr, p.stderr[-3000:]
    assert took < 60
    # Everything before the bad batch went through; nothing behind it did.
    spread, before, after = split(raw)
    got = event_ids([m.value() for m in read_all(kafka_bootstrap, clean)])
    assert got == event_ids(spread + before)
    assert not got & event_ids(after)


def test_the_python_api_raises_kafka_error_with_the_code(kafka_bootstrap: str) -> None:
    raw = ecomlogs.generate_events_json(40, invalid_ratio=0.0, seed=6)
    topic, offset = poisoned_topic(kafka_bootstrap, raw, BAD["corrupt zstd"])
    with pytest.raises(ecomlogs.KafkaError) as caught:
        ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=topic, output_topic=unique("clean"),
                         dlq_topic=unique("dlq"), group_id=unique("g"), until_idle_s=0.5,
                         unreadable_timeout_s=TIMEOUT_S)
    assert caught.value.code == "_BAD_COMPRESSION", caught.value
    assert f"{topic}[1] at offset {offset}" in str(caught.value)


@pytest.mark.parametrize("kind", ["corrupt gzip", "garbled records"])
def test_the_loader_stops_too_and_stores_what_came_before(kafka_bootstrap: str, db: str, kind: str) -> None:
    events = ecomlogs.generate_events_json(160, invalid_ratio=0.0, seed=7)
    clean_values = [ecomlogs.validate(v).canonical or b"" for v in events]
    topic, offset = poisoned_topic(kafka_bootstrap, clean_values, BAD[kind])
    p = subprocess.run([*loader_cmd(kafka_bootstrap, topic, db, unique("l")), "--until-idle", "1",
                        "--unreadable-timeout", str(TIMEOUT_S)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-3000:]
    line = last_line(p.stderr)
    assert f"{topic}[1] at offset {offset}" in line and BAD[kind][2] in line, line
    spread, before, after = split(clean_values)
    stored = {r[0] for r in rows(db)}
    assert stored == event_ids(spread + before)


def test_a_healthy_input_is_not_affected(kafka_bootstrap: str) -> None:
    """The same stage, on the same kind of input without the bad batch, finishes with exit 0."""
    topic = unique("healthy")
    ecomlogs.produce(300, bootstrap_servers=kafka_bootstrap, topic=topic, seed=9)
    st = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=topic, output_topic=unique("clean"),
                          dlq_topic=unique("dlq"), group_id=unique("g"), until_caught_up=True,
                          unreadable_timeout_s=TIMEOUT_S)
    assert st.consumed == 300
