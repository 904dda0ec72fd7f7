"""Baseline stage 2: the ORIGINAL stream processor, in pure Python (confluent-kafka).

A faithful re-implementation of the original system's ``streamProcessor.py`` (see ``baseline/README.md``):
consume ``raw_events`` (group ``silver-stream-processor``), ``json.loads`` each value, apply the original's
five rules, ``json.dumps`` the valid events to ``clean_events`` and only count/log the invalid ones (the
original has no dead-letter topic), committing consumer offsets as it goes.

Two concessions to running it at benchmark volume, neither changing what it does: after a ``poll()`` returns
a message, the messages already fetched are taken with ``consume(num_messages=499, timeout=0)`` instead of one
``poll()`` each (same timing, fewer calls), and offsets are committed asynchronously once per batch instead of
once per message.

    python baseline/streamProcessor.py --until-idle 5 --quiet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Optional, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

log = logging.getLogger("baseline.streamProcessor")

DEFAULT_BOOTSTRAP_SERVERS = "localhost:29092"
INPUT_TOPIC = "raw_events"
OUTPUT_TOPIC = "clean_events"
GROUP_ID = "silver-stream-processor"
CONSUME_BATCH = 500
JOIN_TIMEOUT_S = 30.0

VALID_EVENT_TYPES = {"PAGE_VIEW", "ADD_TO_CART", "PURCHASE"}


def idle_expired(until_idle: Optional[float], last_activity: float, assigned: bool) -> bool:
    """True once ``--until-idle`` seconds passed without a message. The clock starts at the first partition
    assignment (joining a group takes a few seconds); with no assignment at all, after ``JOIN_TIMEOUT_S``."""
    if until_idle is None:
        return False
    waited = time.monotonic() - last_activity
    return waited >= until_idle if assigned else waited >= max(until_idle, JOIN_TIMEOUT_S)


def next_messages(consumer: Consumer, limit: int, timeout: float = 1.0) -> list[Message]:
    """What one ``poll()`` per message would see, in fewer calls: wait (up to ``timeout``) for the next
    message like the original's ``poll(1.0)``, then take what is already fetched without waiting, up to
    ``limit`` in all. (``consume(num_messages=limit)`` alone would hold messages back until ``limit`` of them
    arrived or the timeout passed, which the original never does.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=limit - 1, timeout=0)] if limit > 1 else [first]


def is_valid_event(event: Any) -> bool:
    """The original's five rules: customer_id present and non-empty, a known event_type, amount > 0,
    currency present, and ``is_valid`` true."""
    if not isinstance(event, dict):
        return False
    if not event.get("customer_id"):
        return False
    if event.get("event_type") not in VALID_EVENT_TYPES:
        return False
    amount = event.get("amount")
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
        return False
    if not event.get("currency"):
        return False
    if event.get("is_valid") is not True:
        return False
    return True


def process_value(value: Optional[bytes]) -> Optional[str]:
    """One raw Kafka value -> the JSON to write to ``clean_events``, or None when the event is invalid.

    Undecodable values count as invalid (the original would have crashed on them).
    """
    if value is None:
        return None
    try:
        event = json.loads(value)
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        return None
    if not is_valid_event(event):
        return None
    return json.dumps(event)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baseline/streamProcessor.py",
        description="Baseline (original design, pure Python): raw_events -> validation -> clean_events.",
    )
    p.add_argument("--bootstrap-servers", default=None,
                   help=f"Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS; default {DEFAULT_BOOTSTRAP_SERVERS})")
    p.add_argument("--input-topic", default=INPUT_TOPIC, help="topic to read (default %(default)s)")
    p.add_argument("--output-topic", default=OUTPUT_TOPIC, help="topic for valid events (default %(default)s)")
    p.add_argument("--group-id", default=GROUP_ID, help="consumer group (default %(default)s)")
    p.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                   help="exit once no message arrived for that long (default: run until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="no line per event")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the processor; returns ``{"consumed", "valid", "invalid", "elapsed_s", ...}``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", stream=sys.stderr)
    servers = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP_SERVERS
    consumer = Consumer({
        "bootstrap.servers": servers,
        "group.id": args.group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    producer = Producer({"bootstrap.servers": servers})
    counts = {"consumed": 0, "valid": 0, "invalid": 0, "failed": 0}
    # The idle clock restarts on every assignment, so that joining the group is not counted as idle.
    last_activity = [time.monotonic()]
    assigned = [False]
    first_message: Optional[float] = None  # when the first batch arrived, for active_s

    def on_assign(c: Consumer, partitions: list[Any]) -> None:
        last_activity[0] = time.monotonic()
        assigned[0] = True
        log.info("assigned %s", [f"{p.topic}[{p.partition}]" for p in partitions])

    def delivery_report(err: Optional[KafkaError], msg: Message) -> None:
        if err is not None:
            counts["failed"] += 1
            log.error("delivery to %s failed: %s", args.output_topic, err)

    consumer.subscribe([args.input_topic], on_assign=on_assign)
    interrupted = False
    start = time.perf_counter()
    last_done = time.monotonic()
    try:
        while True:
            messages = next_messages(consumer, CONSUME_BATCH)
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
                counts["consumed"] += 1
                clean = process_value(msg.value())
                if clean is None:
                    counts["invalid"] += 1
                    if not args.quiet:
                        log.info("invalid event: %r", msg.value())
                    continue
                while True:
                    try:
                        producer.produce(args.output_topic, key=msg.key(), value=clean, callback=delivery_report)
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
                counts["valid"] += 1
                if not args.quiet:
                    log.info("valid event: %s", clean)
            consumer.commit(asynchronous=True)
            last_done = time.monotonic()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        flush_start = time.monotonic()
        remaining = producer.flush(60)
        flush_s = time.monotonic() - flush_start
        try:
            if counts["consumed"]:
                consumer.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:  # _NO_OFFSET: the last async commit covered it all
                log.warning("final commit: %s", e)
        consumer.close()
    elapsed = time.perf_counter() - start
    # active_s: from the first message to the last one delivered, without the group join and the idle wait.
    active = last_done - first_message + flush_s if first_message is not None else 0.0
    return {
        "consumed": counts["consumed"],
        "valid": counts["valid"],
        "invalid": counts["invalid"],
        "failed": counts["failed"] + remaining,
        "elapsed_s": round(elapsed, 6),
        "active_s": round(active, 6),
        "interrupted": interrupted,
    }


if __name__ == "__main__":
    stats = main()
    print(json.dumps(stats), flush=True)
    sys.exit(0 if stats["failed"] == 0 else 1)
