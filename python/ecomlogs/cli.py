"""The command line: ``ecomlogs <command> ...`` and the three original entry points at the repo root.

Every command's flags are built from the options table of the Rust core (``ecomlogs.flags``): one
vocabulary of flags and environment variables, flags winning over the environment, the environment over
the defaults; every value checked as it is read (a bad one is one line and exit 2, before anything is
connected to). This module says what each command does with them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Optional, Sequence

from ecomlogs import _core, flags
from ecomlogs.exceptions import ConfigError, EcomlogsError

log = logging.getLogger("ecomlogs.cli")


class _Stopper:
    """Ctrl-C and SIGTERM stop a stage cleanly: the first asks it (through its StopToken) to finish the
    batch in flight, commit and exit 0, without an exception landing in the middle of whatever Python
    code runs at that moment (a log line, say); a second one interrupts at once."""

    def __init__(self) -> None:
        self.token = _core.StopToken()
        self.signals = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.signals += 1
        if self.signals > 1 or self.token.stopped:
            raise KeyboardInterrupt
        self.token.stop()


STOP = _Stopper()


def _signals(command: str) -> None:
    """Installs the handlers for SIGINT and SIGTERM (SIGINT too, explicitly: a stage started in the
    background by a shell inherits it ignored). ``run`` drives its stages from the main thread, where a
    KeyboardInterrupt is what it expects."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    handler = interrupt if command in ("run", "dlq", "dashboard", "contract") else STOP
    try:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): leave the signals alone
        pass


def _rate(n: float, secs: float) -> str:
    return f"{n / secs:,.0f}/s" if secs > 0 else "-"


def _reasons(by_reason: dict[str, int]) -> str:
    text = ", ".join(f"{k}={v:,}" for k, v in sorted(by_reason.items()))
    return f" ({text})" if text else ""


# ---------------------------------------------------------------------------------------------- produce
PRODUCE = ("Generate synthetic e-commerce events (about 25% deliberately invalid) and produce them to Kafka, keyed "
           "by customer_id. Like the original: one event every 500 ms to raw_events, a line per event.")


def cmd_produce(args: argparse.Namespace) -> int:
    options = flags.given(args, "produce")
    o = _core.resolve_options("produce", options)
    interval_ms = 1000.0 / o["rate"] if o["rate"] else o["interval_ms"]
    options["log_each"] = interval_ms >= 50 and not args.quiet
    pace = (f"{o['rate']:,.6g} events/s" if o["rate"] else
            f"one event every {interval_ms:g} ms" if interval_ms > 0 else "as fast as possible")
    log.info("producing to %s on %s (%s)", o["topic"], o["bootstrap_servers"], pace)
    progress = flags.Progress(
        lambda s: f"produced {s.produced:,} ({_rate(s.produced, s.elapsed_s)}), acknowledged {s.delivered:,}, "
        f"invalid {s.invalid:,}",
        quiet=bool(args.quiet) or options["log_each"],
    )
    try:
        stats = _core.produce(**options, progress=progress, stop=STOP.token)
    finally:
        progress.close()
    flags.report(
        f"produced {stats.produced:,} events to {o['topic']} ({stats.valid:,} valid, {stats.invalid:,} invalid) "
        f"in {stats.elapsed_s:.2f}s ({stats.events_per_s:,.0f}/s); all acknowledged"
        + ("; stopped by signal" if stats.interrupted else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------- process
PROCESS = ("Validate every record of raw_events: valid ones go to clean_events (canonical JSON, same key), invalid "
           "ones to dead_letter_events untouched, with headers saying why. Offsets are committed only after the "
           "outputs are acknowledged (or in one transaction with --exactly-once).")


def cmd_process(args: argparse.Namespace) -> int:
    # No progress callback: the Rust loop logs a line per second of activity itself.
    options = flags.given(args, "process")
    o = _core.resolve_options("process", options)
    stats = _core.process(**options, log_each=bool(args.verbose), stop=STOP.token)
    flags.report(
        f"processed {stats.consumed:,} events in {stats.elapsed_s:.2f}s ({stats.events_per_s:,.0f}/s): "
        f"{stats.valid:,} to {o['output_topic']}, {stats.invalid:,} to {o['dlq_topic']}"
        + _reasons(stats.by_reason) + ("; stopped by signal" if stats.interrupted else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------- load
LOAD = ("Load clean_events into PostgreSQL kafka_events_silver, exactly once: each batch is one transaction holding "
        "a binary COPY of the rows and the consumed offsets; the loader resumes where PostgreSQL says, checked "
        "against the log. Database outages pause and retry; rows the database rejects are dead-lettered; a fault "
        "(missing table, no permission) is one line and exit 1.")


def cmd_load(args: argparse.Namespace) -> int:
    stats = _core.load(**flags.given(args, "load"), log_each=bool(args.verbose), stop=STOP.token)
    flags.report(
        f"loaded {stats.rows_inserted:,} rows in {stats.elapsed_s:.2f}s ({stats.rows_per_s:,.0f}/s) from "
        f"{stats.consumed:,} records: {stats.duplicates_skipped:,} duplicates skipped, "
        f"{stats.dead_lettered:,} dead-lettered"
        + (f", {stats.db_retries} database retries" if stats.db_retries else "")
        + (f", {stats.log_resets} partitions on a new log read again" if stats.log_resets else "")
        + (f", {stats.offsets_lost:,} offsets lost to retention" if stats.offsets_lost else "")
        + ("; stopped by signal" if stats.interrupted else "")
        + (f"; {stats.unwritten:,} records left for the next start" if stats.unwritten else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------- migrate
MIGRATE = ("Apply pending migrations, all in one transaction (recorded in schema_migrations): a failure changes "
           "nothing. Safe to run again. A table from the original system may hold an event_id more than once; the "
           "unique key then stops the run with the counts and examples, and --move-duplicates is the fix.")


def cmd_migrate(args: argparse.Namespace) -> int:
    started = time.monotonic()
    options = flags.given(args, "migrate")
    applied = _core.migrate(**options)
    names = {version: f"{version}_{name}" for version, name, _sql in _core.migrations()}
    labels = ", ".join(names.get(v, v) for v in applied)
    if not applied:
        flags.report("the schema is up to date")
    elif options.get("dry_run"):
        flags.report(f"dry run: would apply {labels}; nothing was changed")
    else:
        flags.report(f"applied {labels} in {time.monotonic() - started:.2f}s (one transaction)")
    return 0


# ---------------------------------------------------------------------------------------------- history
RETENTION = ("Drop the daily partitions of kafka_events_silver whose day ended more than --keep days ago: whole "
             "partitions, so seconds whatever their size (no DELETE). The rollups keep counting those days: the "
             "daily views still show them, customer totals keep them. Each partition dropped is logged.")


def cmd_retention(args: argparse.Namespace) -> int:
    options = flags.given(args, "retention")
    if options.get("keep") is None:
        raise ConfigError("--keep DAYS is required (the days of history to keep)")
    dropped = _core.retention(**options)
    rows = sum(n for _day, n in dropped)
    verb = "would drop" if options.get("dry_run") else "dropped"
    flags.report(f"{verb} {len(dropped)} daily partition{'s' * (len(dropped) != 1)} ({rows:,} rows)"
                 + (f", {dropped[0][0]} to {dropped[-1][0]}" if dropped else ""))
    return 0


REBUILD_ROLLUPS = ("Recompute the rollups the analytics views read from kafka_events_silver: after manual edits of "
                   "the table, or to check them. Days the table covers are recomputed (days retention dropped keep "
                   "theirs); customer totals are the table's plus what retention dropped. Loaders wait meanwhile.")


def cmd_rebuild_rollups(args: argparse.Namespace) -> int:
    started = time.monotonic()
    days, customers = _core.rebuild_rollups(**flags.given(args, "rebuild-rollups"))
    flags.report(f"rebuilt the rollups of {days:,} days and {customers:,} customer rows in "
                 f"{time.monotonic() - started:.1f}s")
    return 0


# ---------------------------------------------------------------------------------------------- run
RUN = ("Run the whole pipeline in one process: producer -> processor -> loader on raw_events, clean_events and "
       "kafka_events_silver, with a live status line (events/s and lag per stage, rows, invalid by reason), then "
       "drain and print an analytics report from the views. Start the local stack first (./dev stack "
       "up in a checkout) or point at your own Kafka and PostgreSQL.")


def cmd_run(args: argparse.Namespace) -> int:
    from ecomlogs.pipeline import format_report, run_pipeline

    if not args.verbose:
        # The status line says it all; the stages' own per-second lines would scroll it away.
        for name in ("ecomlogs.processor", "ecomlogs.loader", "ecomlogs.kafka", "ecomlogs.producer",
                     "ecomlogs.stage"):
            logging.getLogger(name).setLevel(logging.WARNING)
        _core.reset_log_cache()
    result = run_pipeline(**flags.given(args, "run"), status=None if args.quiet else flags.status_line)
    if sys.stderr.isatty() and not args.quiet:
        sys.stderr.write("\n")
    print(
        f"\npipeline: produced {result.produced:,} events in {result.elapsed_s:.1f}s; "
        f"{result.valid:,} valid -> {result.rows_inserted:,} new rows"
        + (f" ({result.duplicates_skipped:,} duplicates skipped)" if result.duplicates_skipped else "")
        + f"; {result.invalid:,} dead-lettered" + _reasons(result.invalid_by_reason)
        + ("; stopped by signal" if result.interrupted else "")
    )
    print(format_report(result.report))
    return 0


# ---------------------------------------------------------------------------------------------- dlq
def _dlq_parser(p: argparse.ArgumentParser) -> None:
    from ecomlogs.dlq_cli import configure

    configure(p)


def cmd_dlq(args: argparse.Namespace) -> int:
    from ecomlogs.dlq_cli import run

    return run(args)


# ---------------------------------------------------------------------------------------------- contract
def _contract_parser(p: argparse.ArgumentParser) -> None:
    from ecomlogs.contract_cli import configure

    configure(p)


def cmd_contract(args: argparse.Namespace) -> int:
    from ecomlogs.contract_cli import run

    return run(args)


# ---------------------------------------------------------------------------------------------- dashboard
def _dashboard_parser(p: argparse.ArgumentParser) -> None:
    from ecomlogs.dashboard import DESCRIPTION

    p.description = DESCRIPTION
    flags.add_options(p, "dashboard")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ecomlogs.dashboard import command

    return command(args)


# ---------------------------------------------------------------------------------------------- main
def _stage(description: str, command: str) -> Callable[[argparse.ArgumentParser], None]:
    def configure(p: argparse.ArgumentParser) -> None:
        p.description = description
        flags.version_flag(p)
        flags.add_options(p, command)

    return configure


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "produce": ("generate events into raw_events (producer.py)", _stage(PRODUCE, "produce"), cmd_produce),
    "process": ("validate raw_events into clean_events + dead letters (streamProcessor.py)",
                _stage(PROCESS, "process"), cmd_process),
    "load": ("load clean_events into PostgreSQL, exactly once (psqlConsumer.py)", _stage(LOAD, "load"), cmd_load),
    "migrate": ("apply the database migrations", _stage(MIGRATE, "migrate"), cmd_migrate),
    "retention": ("drop the daily partitions older than --keep days (the rollups keep them)",
                  _stage(RETENTION, "retention"), cmd_retention),
    "rebuild-rollups": ("recompute the rollups from the table", _stage(REBUILD_ROLLUPS, "rebuild-rollups"),
                        cmd_rebuild_rollups),
    "run": ("the whole pipeline in one process, with live status and a report", _stage(RUN, "run"), cmd_run),
    "dlq": ("inspect dead letters, or replay them to the topic they came from", _dlq_parser, cmd_dlq),
    "contract": ("check an event contract (JSON Schema) against a sample of real records, or show the default",
                 _contract_parser, cmd_contract),
    "dashboard": ("a live web page of the pipeline and its numbers (local, read-only)", _dashboard_parser,
                  cmd_dashboard),
}


def build_parser(prog: str = "ecomlogs") -> argparse.ArgumentParser:
    parser = flags.Parser(
        prog=prog,
        description="ecomlogs: e-commerce event logs from Kafka through validation into PostgreSQL.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flags.version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=flags.Parser)
    for name, (helptext, configure, _run) in COMMANDS.items():
        configure(sub.add_parser(name, help=helptext))
    return parser


def _execute(label: str, args: argparse.Namespace) -> int:
    """Runs a parsed command; errors become one readable line and an exit code, never a traceback."""
    command = {"dlq": f"dlq {getattr(args, 'dlq_command', '')}", "contract": "contract check"}.get(
        args.command, args.command)
    try:
        flags.setup_logging(args, command)
        _signals(args.command)
        server = flags.metrics_server(args, command)
        try:
            return COMMANDS[args.command][2](args)
        finally:
            if server is not None:
                server.close()
    except ConfigError as e:
        flags.report(f"{label}: error: {e}", logging.ERROR)
        return 2
    except EcomlogsError as e:
        flags.report(f"{label}: error: {e}", logging.ERROR)
        return 1
    except KeyboardInterrupt:
        print(f"{label}: stopped", file=sys.stderr)
        return 0


def main(argv: Optional[Sequence[str]] = None, prog: str = "ecomlogs") -> int:
    """``ecomlogs COMMAND [flags]``; returns the process exit code."""
    args = build_parser(prog).parse_args(argv)
    return _execute(f"{prog} {args.command}", args)


def entry_point(command: str) -> None:
    """For the root scripts: ``python producer.py [flags]`` is ``ecomlogs produce [flags]``."""
    prog = os.path.basename(sys.argv[0]) or command
    parser = flags.Parser(prog=prog)
    COMMANDS[command][1](parser)
    args = parser.parse_args(sys.argv[1:])
    args.command = command
    sys.exit(_execute(prog, args))


if __name__ == "__main__":
    sys.exit(main())
