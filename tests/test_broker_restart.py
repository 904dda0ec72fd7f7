"""The stages against a broker that keeps its data across restarts (Tansu on a local S3 server): they ride
out restarts by themselves, and the loader says loudly what retention deleted before it was loaded."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest

import ecomlogs
from private_services import DurableBroker
from helpers import finish, read_all, start, unique

pytestmark = pytest.mark.timeout(420)


@pytest.fixture()
def durable(durable_broker: DurableBroker) -> DurableBroker:
    return durable_broker


def test_three_stages_ride_out_two_broker_restarts(durable: DurableBroker, db: str) -> None:
    bs = durable.bootstrap_servers
    raw, clean, dlq = "raw_events", "clean_events", "dead_letter_events"
    ecomlogs.ensure_topics([raw, clean, dlq], bootstrap_servers=bs)
    # This storage engine loses acknowledged records when an idempotent producer's retry meets a
    # restarted broker (measured: hundreds of 60k, in whichever topic was being written; with plain
    # acks=all producers none). What is tested here is the stages, so their producers retry without
    # idempotence: a retry may repeat a record, which the loader's unique event_id absorbs.
    common = ["--bootstrap-servers", bs, "--extra-config", "enable.idempotence=false"]
    stages = {
        "producer": start([sys.executable, "producer.py", *common, "--count", "6000", "--rate", "1000",
                           "--seed", "31"]),
        "processor": start([sys.executable, "streamProcessor.py", *common, "--workers", "1", "--until-idle", "10"]),
        "loader": start([sys.executable, "psqlConsumer.py", *common, "--dsn", db, "--until-idle", "10"]),
    }
    time.sleep(2)
    durable.restart(downtime_s=1.0)
    time.sleep(2)
    durable.restart(downtime_s=1.0)
    logs = {}
    for name, proc in stages.items():
        code, err = finish(proc, timeout=300)
        assert code == 0, f"{name}: {err[-3000:]}"
        logs[name] = err
    for name in ("processor", "loader"):
        lost = logs[name].count("lost the connection to the broker")
        back = logs[name].count("the broker is reachable again")
        # Once per outage, not once per failed attempt (librdkafka retries every few hundred ms).
        assert 1 <= lost <= durable.restarts and back == lost, (name, lost, back, logs[name][-3000:])
        # librdkafka's own line per failed attempt stays out of the log (at most named in our warning).
        assert "FAIL" not in logs[name] and logs[name].count("Connect to ipv4") <= lost
    # Compare with what the broker holds now.
    held = read_all(bs, raw, timeout_s=120)
    assert len(held) >= 6_000
    verdicts = ecomlogs.validate_batch([m.value() for m in held])
    valid = {json.loads(m.value())["event_id"] for m, v in zip(held, verdicts) if v.valid}
    invalid = {m.value() for m, v in zip(held, verdicts) if not v.valid}
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT event_id FROM kafka_events_silver")
        rows = [r[0] for r in c.fetchall()]
    assert len(rows) == len(set(rows)) and set(rows) == valid  # every valid record is one row
    letters = read_all(bs, dlq, timeout_s=120)
    assert invalid <= {m.value() for m in letters}  # every invalid record is a dead letter
    assert {dict(m.headers())[k] for m in letters for k in ("stage",)} == {b"processor"}


def test_records_deleted_by_retention_before_loading_are_an_error_and_the_rest_loads(
        durable: DurableBroker, db: str, caplog: pytest.LogCaptureFixture) -> None:
    """The broker deletes the oldest segments (here: their objects in its S3 bucket, as retention
    would): the stored offset now lies below the log start, and what lay between is reported lost."""
    bs, clean, group = durable.bootstrap_servers, unique("clean"), unique("g")
    ecomlogs.ensure_topics([clean], bootstrap_servers=bs, partitions=1)

    def feed(n: int, seed: int) -> None:
        assert ecomlogs.produce(n, bootstrap_servers=bs, topic=clean, seed=seed,
                                invalid_ratio=0.0).delivered == n

    def load() -> ecomlogs.types.LoadStats:
        return ecomlogs.load(bootstrap_servers=bs, topic=clean, group_id=group, dsn=db,
                             dlq_topic=unique("dlq"), until_idle_s=8, partitions=1)

    feed(3_000, seed=41)
    assert load().rows_inserted == 3_000  # stored: next offset 3000
    feed(2_000, seed=42)  # offsets 3000-4999: never loaded
    feed(4_000, seed=43)  # offsets 5000-8999
    s3 = durable.s3_client()
    prefix = f"clusters/tansu_cluster/topics/{clean}/partitions/{0:010d}/records/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="tansu", Prefix=prefix)["Contents"]]
    doomed = [k for k in keys if int(k.rsplit("/", 1)[1].split(".")[0]) < 5_000]
    assert doomed and len(doomed) < len(keys)
    for k in doomed:
        s3.delete_object(Bucket="tansu", Key=k)
    stats = load()
    assert stats.offsets_lost == 2_000 and stats.rows_inserted == 4_000
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "ecomlogs.loader"]
    assert len(errors) == 1 and "2000 records (offsets 3000 to 4999)" in errors[0] and "lost" in errors[0]
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT count(*) FROM kafka_events_silver")
        assert c.fetchone()[0] == 7_000
        c.execute("SELECT next_offset FROM ecomlogs_kafka_offsets WHERE topic = %s", (clean,))
        assert c.fetchone()[0] == 9_000
