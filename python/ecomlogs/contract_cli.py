"""``ecomlogs contract check FILE [--sample-topic TOPIC]`` and ``ecomlogs contract show-default``: an event
contract checked before it is rolled out, and the shipped default to start one from."""

from __future__ import annotations

import argparse
import sys

from ecomlogs import _core, flags
from ecomlogs._core import ContractCheck


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Event contracts: the event types and rules as a JSON Schema (draft 2020-12) file, whose x-reason "
        "keywords name the reason codes. check: the file is read, checked and compiled (one line and exit 2 "
        "if it is not a valid contract); with --sample-topic, it and the contract in use now (--current-contract, "
        "else ECOMLOGS_CONTRACT, else the shipped default) run over the latest records of that topic, and the "
        "records whose verdict would change are counted by reason. show-default: print the shipped default "
        "contract (the original's rules), to copy and extend."
    )
    sub = p.add_subparsers(dest="contract_command", required=True, metavar="check|show-default",
                           parser_class=flags.Parser)
    check = sub.add_parser("check", help="check a contract, and compare it with the one in use on real records",
                           description="check a contract, and compare it with the one in use on real records")
    check.add_argument("file", metavar="FILE", help="the contract: a JSON Schema (draft 2020-12) file")
    flags.add_options(check, "contract check")
    sub.add_parser("show-default", help="print the shipped default contract",
                   description="print the shipped default contract (JSON Schema), to copy and extend")


def run(args: argparse.Namespace) -> int:
    if args.contract_command == "show-default":
        sys.stdout.write(_core.DEFAULT_CONTRACT)
        return 0
    report = _core.contract_check(args.file, **flags.given(args, "contract check"))
    print(format_check(report))
    return 0


def _counts(by: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n:,}" for reason, n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])))


def format_check(r: ContractCheck) -> str:
    """The check's findings in a few lines."""
    default = " (the shipped default: it runs as typed code)" if r.is_default else ""
    lines = [f"{r.source}: a valid contract, $id {r.contract_id}{default}; reason codes: "
             + (", ".join(r.reason_codes) or "none (every failure is contract_violation)")]
    if r.sample_topic is None:
        lines.append("no sample read (--sample-topic TOPIC runs it over the latest records of a topic)")
        return "\n".join(lines)
    where = ", ".join(f"[{p}] {a}..{b - 1}" for p, (a, b) in sorted(r.ranges.items())) or "empty"
    lines.append(f"sample: {r.sampled:,} records of {r.sample_topic} ({where})")
    lines.append(f"  accepted by the contract in use now ({r.current_source}, $id {r.current_id}): "
                 f"{r.valid_now:,}; by {r.source}: {r.valid_new:,}")
    rejected = sum(r.newly_rejected.values())
    if rejected:
        lines.append(f"  {rejected:,} accepted now would be rejected: {_counts(r.newly_rejected)}")
        for partition, offset, reason, detail in r.examples:
            lines.append(f"      {r.sample_topic}[{partition}]@{offset}  {reason}: {detail}")
    else:
        lines.append("  no record accepted now would be rejected")
    accepted = sum(r.newly_accepted.values())
    if accepted:
        lines.append(f"  {accepted:,} rejected now would be accepted (rejected now as: {_counts(r.newly_accepted)})")
    changed = {f"{a} -> {b}": n for (a, b), n in r.reason_changed.items()}
    if changed:
        lines.append(f"  {sum(changed.values()):,} rejected by both, for another reason: {_counts(changed)}")
    return "\n".join(lines)
