"""Input in every codec a Kafka client can write is processed exactly like uncompressed input (records
written by confluent-kafka with gzip, snappy, lz4 and zstd; today's build used to skip the zstd ones
silently), and the stages' own producers can use any of them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Producer

import ecomlogs
from helpers import assert_exact, read_all, unique

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 1500


def write(bootstrap: str, topic: str, events: list[tuple[Any, bytes, str]], codec: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20})
    for key, value, _intended in events:
        p.produce(topic, key=key, value=value)
    assert p.flush(60) == 0


def outputs(bootstrap: str, clean: str, dlq: str, stats: Any) -> tuple[list[bytes], list[tuple[bytes, str]]]:
    cleaned = sorted(m.value() for m in read_all(bootstrap, clean, expected=stats.valid))
    dead = sorted((m.value(), dict(m.headers())["reason"].decode())
                  for m in read_all(bootstrap, dlq, expected=stats.invalid))
    return cleaned, dead


def test_every_codec_is_processed_like_uncompressed_input(kafka_bootstrap: str, db: str) -> None:
    events = ecomlogs._core.generate_events(PER_CODEC * len(CODECS), seed=12)
    mixed, plain = unique("raw_codecs"), unique("raw_plain")
    ecomlogs.ensure_topics([mixed, plain], bootstrap_servers=kafka_bootstrap)
    for i, codec in enumerate(CODECS):
        write(kafka_bootstrap, mixed, events[i * PER_CODEC:(i + 1) * PER_CODEC], codec)
    write(kafka_bootstrap, plain, events, "none")

    results = {}
    for raw, codec_out in ((mixed, "zstd"), (plain, "none")):
        clean, dlq = unique("clean"), unique("dlq")
        # The processor's own producer in zstd too (the build had no libzstd: "not available").
        st = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean,
                              dlq_topic=dlq, group_id=unique("g"), until_caught_up=True,
                              extra_config={"compression.type": codec_out})
        assert st.consumed == len(events), (raw, st)
        results[raw] = (st, clean, outputs(kafka_bootstrap, clean, dlq, st))
    (st_mixed, clean_mixed, out_mixed), (st_plain, _, out_plain) = results[mixed], results[plain]
    assert (st_mixed.valid, st_mixed.invalid, st_mixed.by_reason) == (st_plain.valid, st_plain.invalid,
                                                                      st_plain.by_reason)
    assert out_mixed == out_plain
    assert len(out_mixed[0]) == st_mixed.valid and len(out_mixed[1]) == st_mixed.invalid

    # And on into the table: the loader reads zstd-compressed clean events.
    loaded = ecomlogs.load(bootstrap_servers=kafka_bootstrap, dsn=db, topic=clean_mixed, group_id=unique("l"),
                           dlq_topic=unique("dlq"), until_caught_up=True)
    assert loaded.rows_inserted == st_mixed.valid
    expected = {json.loads(v)["event_id"]: json.loads(v) for v in out_mixed[0]}
    assert_exact(db, expected)


@pytest.mark.parametrize("codec", CODECS)
def test_the_producer_writes_every_codec(kafka_bootstrap: str, codec: str) -> None:
    topic = unique(f"raw_{codec}")
    st = ecomlogs.produce(500, bootstrap_servers=kafka_bootstrap, topic=topic, seed=3,
                          extra_config={"compression.type": codec})
    assert st.delivered == 500
    assert len(read_all(kafka_bootstrap, topic, expected=500)) == 500
