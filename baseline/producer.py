"""Baseline stage 1: the ORIGINAL producer, in pure Python (confluent-kafka).

A faithful re-implementation of the original system's ``producer.py`` (see ``baseline/README.md``): events
are built with ``uuid4``, ``random`` and ``datetime``, serialised with ``json.dumps`` and produced to
``raw_events`` keyed by ``customer_id``, about 25% of them deliberately invalid, one every 500 ms.

It is the yardstick of ``python -m ecomlogs.bench``; it is not part of the ``ecomlogs`` package.

    python baseline/producer.py --count 1000 --interval-ms 0 --quiet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Sequence

from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger("baseline.producer")

DEFAULT_BOOTSTRAP_SERVERS = "localhost:29092"
DEFAULT_TOPIC = "raw_events"
DEFAULT_INTERVAL_MS = 500
INVALID_RATIO = 0.25

EVENT_TYPES = ["PAGE_VIEW", "ADD_TO_CART", "PURCHASE"]
CURRENCIES = ["USD", "EUR", "GBP"]
# One broken rule per invalid event, so that every rule of the stream processor gets exercised.
INVALID_KINDS = [
    "missing_customer_id",
    "empty_customer_id",
    "unknown_event_type",
    "zero_amount",
    "negative_amount",
    "missing_amount",
    "missing_currency",
    "not_marked_valid",
]


def generate_event(rng: Any = random, invalid_ratio: float = INVALID_RATIO, seeded: bool = False) -> dict[str, Any]:
    """One synthetic event as a dict, like the original's ``generate_event()``.

    ``rng`` is the ``random`` module (the original) or a seeded ``random.Random``; with ``seeded=True`` the
    event id is drawn from ``rng`` too (``uuid4()`` reads the OS and cannot be seeded).
    """
    event_id = uuid.UUID(int=rng.getrandbits(128), version=4) if seeded else uuid.uuid4()
    event: dict[str, Any] = {
        "event_id": str(event_id),
        "customer_id": f"CUST-{rng.randint(1, 10000):05d}",
        "event_type": rng.choice(EVENT_TYPES),
        "amount": round(rng.uniform(5.0, 500.0), 2),
        "currency": rng.choice(CURRENCIES),
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "is_valid": True,
    }
    if rng.random() < invalid_ratio:
        kind = rng.choice(INVALID_KINDS)
        if kind == "missing_customer_id":
            del event["customer_id"]
        elif kind == "empty_customer_id":
            event["customer_id"] = ""
        elif kind == "unknown_event_type":
            event["event_type"] = rng.choice(["CHECKOUT", "page_view", "REFUND", "UNKNOWN"])
        elif kind == "zero_amount":
            event["amount"] = 0
        elif kind == "negative_amount":
            event["amount"] = -event["amount"]
        elif kind == "missing_amount":
            del event["amount"]
        elif kind == "missing_currency":
            del event["currency"]
        else:
            event["is_valid"] = False
    return event


def event_source(seed: Optional[int] = None, invalid_ratio: float = INVALID_RATIO) -> Callable[[], dict[str, Any]]:
    """A zero-argument generator function: the module-level ``random`` (as the original), or seeded."""
    if seed is None:
        return lambda: generate_event(random, invalid_ratio)
    rng = random.Random(seed)
    return lambda: generate_event(rng, invalid_ratio, seeded=True)


def generate_events_json(n: int, seed: Optional[int] = None, invalid_ratio: float = INVALID_RATIO) -> list[bytes]:
    """``n`` events serialised with ``json.dumps`` and encoded: the pure-Python cost the benchmark measures."""
    next_event = event_source(seed, invalid_ratio)
    return [json.dumps(next_event()).encode("utf-8") for _ in range(n)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baseline/producer.py",
        description="Baseline (original design, pure Python): generate events into Kafka raw_events.",
    )
    p.add_argument("--bootstrap-servers", default=None,
                   help=f"Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS; default {DEFAULT_BOOTSTRAP_SERVERS})")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help="topic to produce to (default %(default)s)")
    p.add_argument("--count", type=int, default=None, help="stop after N events (default: run until Ctrl-C)")
    p.add_argument("--interval-ms", type=int, default=DEFAULT_INTERVAL_MS,
                   help="pause between events, 0 = as fast as possible (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible events (default: random)")
    p.add_argument("--quiet", action="store_true", help="no line per event")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the producer; returns ``{"produced", "delivered", "failed", "elapsed_s", "interrupted"}``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", stream=sys.stderr)
    servers = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP_SERVERS
    producer = Producer({"bootstrap.servers": servers})
    next_event = event_source(args.seed)
    interval_s = max(args.interval_ms, 0) / 1000.0
    counts = {"delivered": 0, "failed": 0}

    def delivery_report(err: Optional[KafkaError], msg: Message) -> None:
        # The original's callback: one line per failure (and per success when not quiet).
        if err is not None:
            counts["failed"] += 1
            log.error("delivery failed: %s", err)
        else:
            counts["delivered"] += 1

    produced = 0
    interrupted = False
    start = time.perf_counter()
    try:
        while args.count is None or produced < args.count:
            event = next_event()
            value = json.dumps(event)
            while True:
                try:
                    producer.produce(args.topic, key=event.get("customer_id"), value=value, callback=delivery_report)
                    break
                except BufferError:
                    # The local queue is full: serve delivery reports until there is room again.
                    producer.poll(0.1)
            producer.poll(0)
            produced += 1
            if not args.quiet:
                log.info("produced %s", value)
            if interval_s:
                time.sleep(interval_s)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        remaining = producer.flush(60)
    elapsed = time.perf_counter() - start
    if remaining:
        log.error("%d events were still undelivered after 60 s", remaining)
    return {
        "produced": produced,
        "delivered": counts["delivered"],
        "failed": counts["failed"] + remaining,
        "elapsed_s": round(elapsed, 6),
        "interrupted": interrupted,
    }


if __name__ == "__main__":
    stats = main()
    print(json.dumps(stats), flush=True)
    sys.exit(0 if stats["failed"] == 0 else 1)
