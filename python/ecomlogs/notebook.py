"""Progress in notebooks. Where a Jupyter kernel runs the code (JupyterLab, Notebook, VS Code, Colab,
nbclient), the long calls (``produce``, ``process``, ``load``) show a progress bar that updates in place
once a second, unless the caller passes its own ``progress=`` callable. The bar is a plain HTML
``<progress>`` element with a text fallback: no widget library, no extra dependency. Anywhere else the
calls stay silent, as before."""

from __future__ import annotations

import functools
import html
import sys
import time
from typing import Any, Callable, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# What each stage counts, and how it says so.
_COUNTERS: dict[str, tuple[str, str]] = {
    "produce": ("produced", "events produced"),
    "process": ("consumed", "events processed"),
    "load": ("consumed", "events loaded"),
}


def in_notebook() -> bool:
    """True when running in a Jupyter kernel (a notebook front end shows the output)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _detail(what: str, stats: Any) -> str:
    parts = []
    if what == "produce":
        parts.append(f"{stats.invalid:,} invalid")
    elif what == "process":
        parts.append(f"{stats.valid:,} valid, {stats.invalid:,} dead-lettered")
    elif what == "load":
        parts.append(f"{stats.rows_inserted:,} rows inserted")
        if stats.duplicates_skipped:
            parts.append(f"{stats.duplicates_skipped:,} duplicates skipped")
    activity = getattr(stats, "activity", "")
    if activity and activity != "running":
        parts.append(activity)
    return ", ".join(parts)


class NotebookProgress:
    """A progress bar in the cell's output for one call of a stage (``what``: produce, process, load);
    ``total`` is known for ``produce(count)`` only, the others show a moving bar."""

    def __init__(self, what: str, total: Optional[int]) -> None:
        self.what = what
        self.total = total
        self.counter, self.noun = _COUNTERS[what]
        self.handle: Any = None
        self.last: Any = None
        self.started = time.monotonic()

    def _bundle(self, stats: Any, state: str) -> dict[str, str]:
        done = int(getattr(stats, self.counter, 0))
        elapsed = float(getattr(stats, "elapsed_s", time.monotonic() - self.started))
        rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else "-"
        of = f" of {self.total:,}" if self.total else ""
        text = f"{self.what}: {done:,}{of} {self.noun} ({rate}, {elapsed:.1f} s)"
        detail = _detail(self.what, stats)
        if detail:
            text += f"; {detail}"
        if state:
            text += f" - {state}"
        if state == "done":
            bar = '<progress value="1" max="1"'
        elif self.total:
            bar = f'<progress value="{min(done, self.total)}" max="{self.total}"'
        else:
            bar = "<progress"  # no value: a moving bar
        markup = (f'<div class="ecomlogs-progress" style="font-family: monospace">{bar} style="width: 24em; '
                  f'vertical-align: middle"></progress> {html.escape(text)}</div>')
        return {"text/plain": text, "text/html": markup}

    def __call__(self, stats: Any) -> None:
        self.last = stats
        self.show(stats, "")

    def show(self, stats: Any, state: str) -> None:
        from IPython.display import display

        bundle = self._bundle(stats, state)
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)  # type: ignore[no-untyped-call]
        else:
            self.handle.update(bundle, raw=True)


def with_notebook_progress(fn: F, what: str) -> F:
    """``fn`` (a stage of ``_core``) with a notebook progress bar when called without ``progress``."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("progress") is not None or not in_notebook():
            return fn(*args, **kwargs)
        count = args[0] if args else kwargs.get("count")
        bar = NotebookProgress(what, count if isinstance(count, int) and what == "produce" else None)
        kwargs["progress"] = bar
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            if bar.last is not None:
                bar.show(bar.last, "stopped")
            raise
        bar.show(result, "stopped" if getattr(result, "interrupted", False) else "done")
        return result

    return run  # type: ignore[return-value]
