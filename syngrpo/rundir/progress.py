"""Progress of a long phase, on a terminal and off it.

A run spends minutes in phases that print nothing of their own: vision pre-training, the SFT warm start,
evaluation, writing checkpoints, building tiny models. On a terminal each gets a tqdm bar; anywhere else
(CI, ``nohup``, a log file, a pty that reports 0 columns, where tqdm would draw nothing) a plain line, with
the count, the rate and the time left, at least every ``interval_s`` seconds, even while one step is
slow: a heartbeat thread writes the line when no update did. So a log is never silent for longer than
the interval, whatever the phase.

The interval is ``logging.progress_interval_s`` of a training config, or ``$SYNGRPO_PROGRESS_INTERVAL`` for
commands without one (and as the default of both): :func:`default_interval`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

#: environment variable: seconds between two plain progress lines (default :data:`DEFAULT_INTERVAL_S`)
INTERVAL_ENV = "SYNGRPO_PROGRESS_INTERVAL"
#: seconds between two plain progress lines when nothing says otherwise
DEFAULT_INTERVAL_S = 15.0


#: the plain progresses open now, innermost last: only the innermost writes heartbeat lines (an outer one
#: would report "no step done" all through an evaluation inside it)
_ACTIVE: list[Progress] = []
_ACTIVE_LOCK = threading.Lock()


def default_interval() -> float:
    """``$SYNGRPO_PROGRESS_INTERVAL`` if it holds a positive number of seconds, else :data:`DEFAULT_INTERVAL_S`."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def draws_bars(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal a bar can be drawn on: a tty with a width.

    A pty that reports 0 columns (some CI runners, ``script`` without a size) is a tty where tqdm draws
    nothing at all: it gets the plain lines instead.
    """
    stream = sys.stderr if stream is None else stream
    try:
        if not stream.isatty():
            return False
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One phase's progress: a bar on a terminal, a plain line at least every ``interval_s`` elsewhere.

    ``total`` may be ``None`` (a phase without a count: only the elapsed time is shown). ``initial``
    is where a resumed count starts (the rate counts only what this object saw). ``enabled=False``
    prints nothing. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, desc: str, total: int | None = None, *, unit: str = "step", enabled: bool = True,
                 interval_s: float | None = None, initial: int = 0, stream: TextIO | None = None,
                 leave: bool = False, bar: bool | None = None, announce: bool = True, delay_s: float = 0.0) -> None:
        self.desc = desc
        self.total = total
        self.unit = unit
        self.n = initial
        self.interval_s = default_interval() if interval_s is None else float(interval_s)
        self._stream = stream
        self._initial = initial
        self._postfix: dict[str, str] = {}
        self._lock = threading.Lock()
        self._start = self._last_line = time.monotonic()
        self._bar: Any = None
        self._closed = not enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lines = 0
        self._announced = False
        if not enabled:
            return
        if draws_bars(self.stream) if bar is None else bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                             file=self.stream, delay=delay_s)
            return
        self._announced = announce
        if announce:
            self._line()
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)
        self._thread = threading.Thread(target=self._heartbeat, name=f"syngrpo-progress-{desc}", daemon=True)
        self._thread.start()

    @property
    def stream(self) -> TextIO:
        return sys.stderr if self._stream is None else self._stream

    @property
    def plain(self) -> bool:
        """True when this progress writes plain lines (no terminal to draw a bar on)."""
        return not self._closed and self._bar is None

    @property
    def bar(self) -> bool:
        """True while this progress draws a bar."""
        return self._bar is not None and not self._closed

    def reset_clock(self) -> None:
        """Measure the rate (and the time left) from now: the work counted starts here, not at creation."""
        with self._lock:
            self._start = self._last_line = time.monotonic()
            self._initial = self.n

    # ---- updates ----------------------------------------------------------------------------------
    def update(self, n: int = 1, postfix: Mapping[str, Any] | None = None) -> None:
        """``n`` more units done; ``postfix`` (name -> value) is shown beside the count from now on."""
        self.update_to(self.n + n, postfix)

    def update_to(self, n: int, postfix: Mapping[str, Any] | None = None, *, force_line: bool = False) -> None:
        """The count is now ``n``; a plain line is written when one is due (or ``force_line``)."""
        if self._closed:
            return
        with self._lock:
            if postfix is not None:
                self._postfix = {str(k): _short(v) for k, v in postfix.items()}
            previous, self.n = self.n, n
        if self._bar is not None:
            if postfix is not None:  # before the update, which redraws: the bar shows this step's values
                self._bar.set_postfix(self._postfix, refresh=False)
            self._bar.update(max(0, n - previous))
            return
        if force_line or time.monotonic() - self._last_line >= self.interval_s:
            self._line()

    def write(self, text: str) -> None:
        """A message line that does not break the bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """The bar closes; off a terminal, a last line says the count, the time taken and the rate (for a
        progress made with ``announce=False``, only when it wrote a line before: a short phase stays silent)."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            with _ACTIVE_LOCK:
                if self in _ACTIVE:
                    _ACTIVE.remove(self)
                if _ACTIVE:  # the enclosing phase speaks again one interval from now
                    _ACTIVE[-1]._last_line = time.monotonic()
        if self._bar is not None:
            self._bar.close()
        elif self._announced or self._lines:
            self._line(final=True)
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plain lines ------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval_s / 4)):
            with _ACTIVE_LOCK:
                innermost = not _ACTIVE or _ACTIVE[-1] is self
            if innermost and time.monotonic() - self._last_line >= self.interval_s:
                self._line()

    def _line(self, *, final: bool = False) -> None:
        with self._lock:
            text = self.describe(final=final)
            self._last_line = time.monotonic()
            self._lines += 1
            try:
                print(text, file=self.stream, flush=True)
            except (OSError, ValueError):  # a closed or broken stream: progress is never worth a crash
                pass

    def describe(self, *, final: bool = False) -> str:
        """The plain line: ``desc: n/total units (pct %), rate, ETA m:ss, postfix``."""
        elapsed = time.monotonic() - self._start
        done = self.n - self._initial
        parts = []
        if self.total:
            parts.append(f"{self.n}/{self.total} {self.unit}s ({100 * self.n / self.total:.0f} %)")
        elif done or self.total == 0:
            parts.append(f"{self.n} {self.unit}s")
        if final:
            parts.append(f"done in {clock(elapsed)}")
        else:
            parts.append(f"{clock(elapsed)} elapsed")
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.2f} s/{self.unit}")
            if self.total and not final and self.n < self.total:
                parts.append(f"ETA {clock((self.total - self.n) / rate)}")
        elif self.total is not None and not final and self._lines:
            parts.append(f"first {self.unit} running")
        line = f"{self.desc}: " + ", ".join(parts)
        if self._postfix:
            line += "  " + " ".join(f"{k}={v}" for k, v in self._postfix.items())
        return line


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def phase(desc: str, *, enabled: bool = True, interval_s: float | None = None,
          stream: TextIO | None = None) -> Progress:
    """A phase without a count (writing a checkpoint, loading a model), silent when it is short.

    Off a terminal nothing is written unless it outlasts ``interval_s``: then a line every interval and a
    last one with the time taken. On a terminal a bar with the elapsed time appears after two seconds.
    Use as a context manager.
    """
    return Progress(desc, None, enabled=enabled, interval_s=interval_s, stream=stream, announce=False, delay_s=2.0)


def quiet_library_bars(*, diffusers: bool = False) -> None:
    """Turn off the bars transformers, diffusers and huggingface_hub draw while weights load or save.

    "Loading weights", "Writing model shards", "Loading pipeline components" bury the phase that matters
    (and interleave with its plain lines off a terminal). huggingface_hub's switch is an environment
    variable that transformers also reads when it is imported; a module already imported is told directly.
    ``diffusers``: import its logging module to turn its bars off (seconds: only where a pipeline loads).
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    if diffusers or "diffusers" in sys.modules:
        try:
            from diffusers.utils import logging as diffusers_logging
        except ImportError:  # the sdxl extra is not installed: nothing draws
            return
        diffusers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
