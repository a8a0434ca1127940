"""Live progress of :func:`hpo.search`: trials done, the best so far, elapsed and remaining time.

In Jupyter one output is refreshed in place (an IPython display handle: plain text, no widget library
needed, and kept in the saved notebook); on a terminal one line on standard error is rewritten; elsewhere
(a log file, a pipe) a line is written per trial. The ``hpo run`` command has its own display (rich bars)."""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping, TextIO

from hpo.results import TrialResult
from hpo.study.summary import StudyProgress


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and getattr(shell, "kernel", None) is not None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class SearchProgress:
    """Trial- and epoch-end callbacks for a study that show where it stands."""

    EPOCH_REFRESH_S = 0.5  # at most two refreshes a second from epochs (a trial's end always refreshes)

    def __init__(self, total: int, metric: str, stream: TextIO | None = None, notebook: bool | None = None) -> None:
        self.total = total
        self.metric = metric
        self.stream = stream or sys.stderr
        self.notebook = in_notebook() if notebook is None else notebook
        self.tty = not self.notebook and bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.last: StudyProgress | None = None
        self.best_trial: int | None = None
        self.running = ""
        self._handle: Any = None
        self._refreshed = 0.0
        self._width = 0

    def line(self) -> str:
        """The current state in one line."""
        p = self.last
        done = p.done if p else 0
        elapsed = time.monotonic() - self.started
        parts = [f"trials {done}/{self.total}"]
        if p is not None and p.best_value is not None:
            parts.append(f"best select {self.metric} {_fmt(p.best_value)} (trial {self.best_trial})")
        if p is not None and (p.failed or p.pruned):
            parts.append(f"failed {p.failed} pruned {p.pruned}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if done and done < self.total:
            parts.append(f"remaining ~{_duration(elapsed / done * (self.total - done))}")
        if self.running:
            parts.append(self.running)
        return " | ".join(parts)

    def on_trial_end(self, result: TrialResult, progress: StudyProgress) -> None:
        if progress.best_value is not None and result.value == progress.best_value:
            self.best_trial = result.number
        self.last = progress
        self.running = ""
        if not self.notebook and not self.tty:
            state = result.state.value
            print(f"[{progress.done}/{progress.total}] trial {result.number} {state} select={_fmt(result.value)} "
                  f"best={_fmt(progress.best_value)}", file=self.stream, flush=True)
            return
        self._show(self.line())

    def on_epoch_end(self, number: int, epoch: int, total: int, logs: Mapping[str, float]) -> None:
        self.running = f"trial {number} epoch {epoch}/{total}"
        now = time.monotonic()
        if (self.notebook or self.tty) and now - self._refreshed >= self.EPOCH_REFRESH_S:
            self._show(self.line())

    def close(self) -> None:
        """The final state stays on screen."""
        self.running = ""
        if self.notebook or self.tty:
            self._show(self.line())
        if self.tty:
            print(file=self.stream, flush=True)

    def _show(self, text: str) -> None:
        self._refreshed = time.monotonic()
        if self.notebook:
            from IPython.display import Pretty, display

            if self._handle is None:
                self._handle = display(Pretty(text), display_id=True)
            else:
                self._handle.update(Pretty(text))
            return
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
