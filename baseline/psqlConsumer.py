"""Baseline stage 3: the ORIGINAL PostgreSQL loader, in pure Python (confluent-kafka + psycopg2).

A faithful re-implementation of the original system's ``psqlConsumer.py`` (see ``baseline/README.md``):
consume ``clean_events`` (group ``postgres-loader``), buffer 500 events, write them with psycopg2's
``execute_batch`` INSERT into ``kafka_events_silver``, commit the transaction, and only then commit the
Kafka offsets; the remainder is flushed at exit.

One concession to running it at benchmark volume: after a ``poll()`` returns a message, the messages already
fetched are taken with ``consume(num_messages=499, timeout=0)`` instead of one ``poll()`` each (same timing,
fewer calls); the offsets committed after a flush are exactly those of the rows written.

    python baseline/psqlConsumer.py --until-idle 5 --quiet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Optional, Sequence, cast

import psycopg2
from psycopg2 import sql
from psycopg2.extras import execute_batch
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

log = logging.getLogger("baseline.psqlConsumer")

DEFAULT_BOOTSTRAP_SERVERS = "localhost:29092"
DEFAULT_DSN = "postgresql://postgres@localhost:5432/ecom_kafka"
TOPIC = "clean_events"
GROUP_ID = "postgres-loader"
TABLE = "kafka_events_silver"
BATCH_SIZE = 500
JOIN_TIMEOUT_S = 30.0

# The original's table, from its README (created only with --create-table).
DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id SERIAL PRIMARY KEY,
    event_id VARCHAR(255) NOT NULL,
    customer_id VARCHAR(255),
    event_type VARCHAR(50),
    amount DECIMAL(10, 2),
    currency VARCHAR(10),
    event_timestamp TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)
"""

INSERT = """
INSERT INTO {table} (event_id, customer_id, event_type, amount, currency, event_timestamp)
VALUES (%s, %s, %s, %s, %s, %s)
"""

Row = tuple[Any, Any, Any, Any, Any, Any]


def next_messages(consumer: Consumer, limit: int, timeout: float = 1.0) -> list[Message]:
    """What one ``poll()`` per message would see, in fewer calls: wait (up to ``timeout``) for the next
    message like the original's ``poll(1.0)``, then take what is already fetched without waiting, up to
    ``limit`` in all. (``consume(num_messages=limit)`` alone would hold messages back until ``limit`` of them
    arrived or the timeout passed, which the original never does.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=limit - 1, timeout=0)] if limit > 1 else [first]


def idle_expired(until_idle: Optional[float], last_activity: float, assigned: bool) -> bool:
    """True once ``--until-idle`` seconds passed without a message. The clock starts at the first partition
    assignment (joining a group takes a few seconds); with no assignment at all, after ``JOIN_TIMEOUT_S``."""
    if until_idle is None:
        return False
    waited = time.monotonic() - last_activity
    return waited >= until_idle if assigned else waited >= max(until_idle, JOIN_TIMEOUT_S)


class BaselineError(RuntimeError):
    """A setup problem the loader reports in one line (missing table, ...)."""


def table_identifier(name: str) -> sql.Identifier:
    """``schema.table`` or ``table`` as a quoted SQL identifier."""
    return sql.Identifier(*name.split("."))


def event_row(value: Optional[bytes]) -> Row:
    """One clean event's JSON -> the row the original inserts (ValueError when it is not a JSON object)."""
    if value is None:
        raise ValueError("the record has no value")
    event = json.loads(value)
    return (
        event.get("event_id"),
        event.get("customer_id"),
        event.get("event_type"),
        event.get("amount"),
        event.get("currency"),
        event.get("timestamp"),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baseline/psqlConsumer.py",
        description="Baseline (original design, pure Python): clean_events -> PostgreSQL, 500 rows per batch.",
    )
    p.add_argument("--bootstrap-servers", default=None,
                   help=f"Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS; default {DEFAULT_BOOTSTRAP_SERVERS})")
    p.add_argument("--topic", default=TOPIC, help="topic to read (default %(default)s)")
    p.add_argument("--group-id", default=GROUP_ID, help="consumer group (default %(default)s)")
    p.add_argument("--dsn", default=None, help=f"PostgreSQL URL (env DATABASE_URL; default {DEFAULT_DSN})")
    p.add_argument("--table", default=TABLE, help="target table, must exist (default %(default)s)")
    p.add_argument("--create-table", action="store_true", help="create the original's table when missing")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="rows per INSERT batch (default %(default)s)")
    p.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                   help="exit once no message arrived for that long (default: run until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="no line per batch")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the loader; returns ``{"rows", "batches", "skipped", "elapsed_s", "interrupted"}``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", stream=sys.stderr)
    servers = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP_SERVERS
    dsn = args.dsn or os.environ.get("DATABASE_URL") or DEFAULT_DSN
    batch_size = max(args.batch_size, 1)

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            if args.create_table:
                cur.execute(sql.SQL(DDL).format(table=table_identifier(args.table)))
                conn.commit()
            cur.execute("SELECT to_regclass(%s)", (args.table,))
            if cur.fetchone()[0] is None:
                raise BaselineError(f"table {args.table} does not exist (create it, or pass --create-table)")
            conn.commit()
        insert = sql.SQL(INSERT).format(table=table_identifier(args.table)).as_string(conn)

        consumer = Consumer({
            "bootstrap.servers": servers,
            "group.id": args.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        })
        last_activity = [time.monotonic()]
        assigned = [False]
        first_message: Optional[float] = None  # when the first batch arrived, for active_s

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            last_activity[0] = time.monotonic()
            assigned[0] = True
            log.info("assigned %s", [f"{p.topic}[{p.partition}]" for p in partitions])

        buffer: list[Row] = []
        # Next offset per partition of the rows in the buffer: what to commit once they are in the database.
        pending: dict[tuple[str, int], int] = {}
        stats = {"rows": 0, "batches": 0, "skipped": 0}

        def flush() -> None:
            if buffer:
                with conn.cursor() as cur:
                    try:
                        execute_batch(cur, insert, buffer)
                        conn.commit()
                    except psycopg2.Error:
                        conn.rollback()
                        raise
                stats["rows"] += len(buffer)
                stats["batches"] += 1
                if not args.quiet:
                    log.info("inserted a batch of %d rows (%d in total)", len(buffer), stats["rows"])
                buffer.clear()
            if pending:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in pending.items()],
                                asynchronous=False)
                pending.clear()

        consumer.subscribe([args.topic], on_assign=on_assign)
        interrupted = False
        start = time.perf_counter()
        last_done = time.monotonic()
        try:
            while True:
                messages = next_messages(consumer, batch_size)
                if not messages:
                    if idle_expired(args.until_idle, last_activity[0], assigned[0]):
                        break
                    continue
                last_activity[0] = time.monotonic()
                if first_message is None:
                    first_message = last_activity[0]
                for msg in messages:
                    if msg.error():
                        log.error("consumer error: %s", msg.error())
                        continue
                    try:
                        buffer.append(event_row(msg.value()))
                    except (ValueError, TypeError, AttributeError) as e:
                        stats["skipped"] += 1
                        log.warning("skipping an undecodable event at %s[%d]@%d: %s",
                                    msg.topic(), msg.partition(), msg.offset(), e)
                    # A consumed message always carries its topic, partition and offset.
                    position = cast(tuple[str, int], (msg.topic(), msg.partition()))
                    pending[position] = cast(int, msg.offset()) + 1
                    if len(buffer) >= batch_size:
                        flush()
                last_done = time.monotonic()
        except KeyboardInterrupt:
            interrupted = True
        flush_start = time.monotonic()
        try:
            flush()  # the original's final flush of what is left in the buffer
        except KafkaException as e:
            log.warning("final offset commit: %s", e)
        finally:
            consumer.close()
        flush_s = time.monotonic() - flush_start
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    # active_s: from the first message to the last row committed, without the group join and the idle wait.
    active = last_done - first_message + flush_s if first_message is not None else 0.0
    return {**stats, "elapsed_s": round(elapsed, 6), "active_s": round(active, 6), "interrupted": interrupted}


if __name__ == "__main__":
    try:
        result = main()
    except BaselineError as e:
        print(f"psqlConsumer.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result), flush=True)
