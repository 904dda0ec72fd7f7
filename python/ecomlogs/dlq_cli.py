"""``ecomlogs dlq inspect`` and ``ecomlogs dlq replay``: dead letters by stage and reason, and back to the
topic they came from once the cause is fixed."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from ecomlogs import _core, flags, ops
from ecomlogs._core import DeadLetter, DeadLetterReport, ReplayStats


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Dead letters you can act on. inspect: counts by stage and reason with a few samples (--json for "
        "scripts). replay: send the chosen dead letters back to the topic each came from (its source.topic "
        "header) with their original key and value and lineage headers (ecomlogs.replayed_from, "
        "ecomlogs.replay_generation). A replay resumes where the last one with the same --reason/--stage "
        "stopped, and leaves dead letters made from replayed records alone unless --include-replayed, so it "
        "cannot feed itself; the loader stores each event_id once."
    )
    sub = p.add_subparsers(dest="dlq_command", required=True, metavar="inspect|replay",
                           parser_class=flags.Parser)
    for name, helptext in (("inspect", "counts by stage and reason, with samples"),
                           ("replay", "send dead letters back to their source topic")):
        flags.add_options(sub.add_parser(name, help=helptext, description=helptext), f"dlq {name}")


def _text(b: Any, limit: int = 160) -> str:
    if b is None:
        return "null"
    s = bytes(b).decode("utf-8", "replace")
    return s if len(s) <= limit else s[:limit] + "…"


def _when(ms: Any) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def _letter_json(d: DeadLetter) -> dict[str, Any]:
    return {
        "partition": d.partition, "offset": d.offset, "timestamp": _when(d.timestamp_ms),
        "stage": d.stage, "reason": d.reason, "detail": d.detail, "source_topic": d.source_topic,
        "source_partition": d.source_partition, "source_offset": d.source_offset,
        "replayed_from": d.replayed_from, "generation": d.generation,
        "key": None if d.key is None else _text(d.key, 10_000),
        "value": None if d.value is None else _text(d.value, 100_000), "headers": d.headers,
    }


def _print_report(r: DeadLetterReport) -> None:
    print(f"{r.dlq_topic}: {r.scanned:,} dead letters read, {r.total:,} match"
          + (f" ({r.from_replays:,} made from replayed records)" if r.from_replays else ""))
    if not r.counts:
        return
    rows = [(stage, reason, f"{n:,}") for (stage, reason), n in sorted(r.counts.items())]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(("stage", "reason", "count"))]
    print(f"\n{'stage':<{widths[0]}}  {'reason':<{widths[1]}}  {'count':>{widths[2]}}")
    for stage, reason, n in rows:
        print(f"{stage:<{widths[0]}}  {reason:<{widths[1]}}  {n:>{widths[2]}}")
    if r.samples:
        print("\nsamples:")
    for d in r.samples:
        print(f"  {d.stage}/{d.reason}  {r.dlq_topic}[{d.partition}]@{d.offset}  {_when(d.timestamp_ms)}  "
              f"from {d.source_topic}[{d.source_partition}]@{d.source_offset}"
              + (f"  replay generation {d.generation} of {d.replayed_from}" if d.generation else ""))
        if d.detail:
            print(f"      detail: {d.detail}")
        print(f"      key: {_text(d.key)}  value: {_text(d.value)}")


def run(args: argparse.Namespace) -> int:
    command = f"dlq {args.dlq_command}"
    options = flags.given(args, command)
    dlq_topic = _core.resolve_options(command, options)["dlq_topic"]
    since = ops.since_ms(args.since)
    if args.dlq_command == "inspect":
        report = _core.dlq_inspect(**options, since_ms=since)
        if args.json:
            json.dump({
                "dlq_topic": report.dlq_topic, "scanned": report.scanned, "total": report.total,
                "from_replays": report.from_replays,
                "counts": [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(report.counts.items())],
                "samples": [_letter_json(d) for d in report.samples],
            }, sys.stdout, indent=2)
            print()
        else:
            _print_report(report)
        return 0
    stats = _core.dlq_replay(**options, since_ms=since)
    print(replay_summary(stats, dlq_topic), file=sys.stderr)
    return 0


def replay_summary(stats: ReplayStats, dlq_topic: str) -> str:
    """What a replay did (or would do), in a few lines: where it started, what it sent where, what it left
    and why."""
    verb = "would replay" if stats.dry_run else "replayed"
    where = ", ".join(f"{n:,} to {t}" for t, n in sorted(stats.by_topic.items())) or "nothing"
    lines = [f"{verb} {stats.replayed:,} of {stats.matched:,} matching dead letters ({stats.scanned:,} read): {where}"]
    if stats.resumed:
        at = ", ".join(f"[{p}]@{o}" for p, o in sorted(stats.started_at.items()))
        lines.append(f"  resumed where the last replay stopped ({dlq_topic} {at}; --from-beginning starts over)")
    if stats.ranges:
        lines.append("  " + ("would send" if stats.dry_run else "sent") + ": "
                     + ", ".join(f"{dlq_topic}[{p}] offsets {a}..{b}" for p, (a, b) in sorted(stats.ranges.items())))
    if stats.from_replays:
        lines.append(f"  {stats.from_replays:,} made from replayed records left in place (--include-replayed to send "
                     "them once more)")
    if stats.no_source:
        lines.append(f"  {stats.no_source:,} without a source topic left in place")
    if not stats.dry_run:
        lines.append(f"  position committed for consumer group {stats.checkpoint_group}")
    return "\n".join(lines)
