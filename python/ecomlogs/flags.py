"""What every command of the command line shares, in one leaf module (it imports nothing of ecomlogs but the
core, the logging setup and the exceptions): flags built from the options table, errors in one line, the
closing report, the live progress line, logging and the metrics endpoint.

Every option is declared once, in the Rust core's table (``_core.OPTIONS``: name, commands, kind and range,
default, environment variable, help). A command's flags are built from it; each value is parsed and checked
by the core as the flag is read (a bad one is one line and exit 2, before anything is connected to); a flag
not given is left None, so that the core resolves it (its environment variable, else its default).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Callable, NoReturn, Optional

from ecomlogs import _core, logs
from ecomlogs.exceptions import ConfigError

log = logging.getLogger("ecomlogs.cli")

Option = dict[str, Any]


def options(command: str, *, cli: Optional[bool] = None, python: Optional[bool] = None) -> list[Option]:
    """The options of ``command`` from the table, in its order (``cli``/``python``: only those offered
    there)."""
    return [o for o in _core.OPTIONS if o["command"] == command
            and (cli is None or o["cli"] == cli) and (python is None or o["python"] == python)]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: message``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --x: --x must be ..."; the core's message already names the flag.
        head, sep, rest = message.partition(": ")
        if sep and head.startswith("argument ") and rest.startswith(head[len("argument "):].split("/")[0]):
            message = rest
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parse(command: str, o: Option) -> Callable[[str], Any]:
    """An argparse type: the core parses and checks the text (an item of a repeatable option)."""

    def parse(text: str) -> Any:
        try:
            value = _core.parse_option(command, o["name"], text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if o["repeat"] and isinstance(value, list):
            return value[0]
        return value

    parse.__name__ = o["name"]
    return parse


def help_text(o: Option) -> str:
    """The flag's help: what it does, its environment variable and its default (a flag that turns off
    what is on by default says so)."""
    env = f"env {o['env']}; " if o["env"] else ""
    if o["kind"] == "bool" and o["default"] is True:
        return f"do not {o['help']}"
    if o["kind"] == "bool" and not o["env"]:
        return str(o["help"])
    return f"{o['help']} ({env}default {o['default_text']})"


def add_options(p: argparse.ArgumentParser, command: str) -> None:
    """Adds the flags of ``command``'s options to ``p``, from the table."""
    groups: dict[str, Any] = {}
    for o in options(command, cli=True):
        target: Any = p
        if o["group"]:
            if o["group"] not in groups:
                groups[o["group"]] = p.add_mutually_exclusive_group()
            target = groups[o["group"]]
        names = [o["flag"], *o["aliases"]]
        kw: dict[str, Any] = dict(dest=o["name"], default=None, help=help_text(o))
        if o["kind"] == "bool":
            kw.update(action="store_const", const=not o["default"])
        else:
            kw.update(type=_parse(command, o), metavar=o["metavar"])
            if o["repeat"] or o["kind"] == "pairs":
                kw.update(action="append")
        target.add_argument(*names, **kw)


def given(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The values the user gave for ``command``'s options that the Python API takes (None: not given, so
    the core resolves the environment and the default; where the Python API's default differs, the command
    line's is passed)."""
    out: dict[str, Any] = {}
    for o in options(command, cli=True, python=True):
        value = getattr(args, o["name"], None)
        if value is None and o["default"] != o["python_default"]:
            value = o["default"]
        if value is None:
            continue
        if o["kind"] == "pairs":
            value = {k: v for pair in value for k, v in pair.items()}
        out[o["name"]] = value
    return out


def resolve(args: argparse.Namespace, command: str, name: str) -> Any:
    """A command-line option's value: the flag's, else its environment variable, else its default."""
    return _core.resolve_option(command, name, getattr(args, name, None))


def version_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"ecomlogs {_core.__version__}")


# ---------------------------------------------------------------------------------------------- running
def setup_logging(args: argparse.Namespace, command: str) -> None:
    if getattr(args, "quiet", None):
        level = "warning"
    elif getattr(args, "verbose", None):
        level = "debug"
    else:
        level = resolve(args, command, "log_level")
    logs.configure(logging.getLevelName(level.upper()), resolve(args, command, "log_format"))
    _core.reset_log_cache()


def metrics_server(args: argparse.Namespace, command: str) -> Optional[_core.MetricsServer]:
    """Starts the metrics endpoint when asked for (flag, else ECOMLOGS_METRICS_PORT)."""
    if not any(o["name"] == "metrics_port" for o in options(command)):
        return None
    port = resolve(args, command, "metrics_port")
    if port is None:
        return None
    return _core.serve_metrics(port, resolve(args, command, "metrics_host"))


def report(text: str, level: int = logging.INFO) -> None:
    """A command's closing summary (or error): a plain line on stderr, or a log record with --log-format
    json (so that every line a log pipeline reads is JSON)."""
    root = logging.getLogger()
    if root.handlers and isinstance(root.handlers[0].formatter, logs.JsonFormatter):
        log.log(level, text)
    else:
        print(text, file=sys.stderr)


class Progress:
    """A live one-line status on a terminal; a log line every ``every_s`` seconds otherwise."""

    def __init__(self, render: Callable[[Any], str], quiet: bool, every_s: float = 10.0) -> None:
        self.render = render
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self.last = 0.0
        self.dirty = False

    def __call__(self, stats: Any) -> None:
        if self.quiet:
            return
        line = self.render(stats)
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
            self.dirty = True
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            log.info(line)

    def close(self) -> None:
        if self.dirty:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.dirty = False


def status_line(text: str) -> None:
    """A status line that rewrites itself on a terminal, and is a plain line elsewhere."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K" + text)
        sys.stderr.flush()
    else:
        print(text, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- docs
def markdown_table() -> str:
    """The README's configuration table, rendered from the options table (a test keeps them equal): one
    row per flag and meaning, with the commands that take it."""
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for o in _core.OPTIONS:
        if not o["cli"]:
            continue
        flag = ", ".join(f"`{f}`" for f in [o["flag"], *o["aliases"]])
        help_ = help_text(o).split(" (env ")[0].split(" (default ")[0]
        key = (flag, o["env"] or "", o["default_text"] if o["kind"] != "bool" else "", help_)
        if o["command"] not in rows.setdefault(key, []):
            rows[key].append(o["command"])
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| flag | commands | environment | default | meaning |", "|---|---|---|---|---|"]
    for (flag, env, default, help_), commands in rows.items():
        lines.append(f"| {flag} | {', '.join(commands)} | {f'`{env}`' if env else '–'} | {cell(default) or '–'} | "
                     f"{cell(help_)} |")
    return "\n".join(lines)
