"""Reading the stages' Prometheus endpoint in tests: the text format parsed into {(name, labels): value}."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Optional

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Samples:
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (0 when absent: a counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(base: str) -> Samples:
    status, text = get(base + "/metrics")
    assert status == 200, text
    return parse(text)


class StderrFollower:
    """Keeps reading a stage's stderr in a thread (so that it never blocks on a full pipe) into ``lines``.
    ``stop`` signals the stage, waits for it and then for the reader, so every line it wrote is in ``lines``:
    nothing else may read the pipe meanwhile (``communicate`` would take some of the lines)."""

    def __init__(self, proc: "subprocess.Popen[str]", lines: list[str]) -> None:
        self.proc, self.lines = proc, lines
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                self.lines.append(line)
        except (ValueError, OSError):  # the pipe was closed
            pass

    def endpoint(self, timeout_s: float = 60.0) -> str:
        """Waits until the stage logs where its metrics are served; returns ``http://host:port``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(r"metrics on (http://[^/\s]+)/metrics", line)
                if m:
                    return m.group(1)
            if not self.thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError("the stage never said where its metrics are:\n" + "".join(self.lines[-30:]))

    def stop(self, sig: Optional[int] = None, timeout: float = 60.0) -> int:
        """Signals the stage (if ``sig``), waits up to ``timeout`` s (then kills it); returns its exit code."""
        try:
            if sig is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.thread.join(timeout=10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        return self.proc.returncode


def find(lines: list[str], pattern: str) -> Optional[re.Match[str]]:
    for line in lines:
        m = re.search(pattern, line)
        if m:
            return m
    return None
