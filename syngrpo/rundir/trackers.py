"""The contract of experiment trackers (the ``trackers`` plugin kind) and the fan-out the run log uses.

``logging.trackers: [tensorboard, wandb, mlflow]`` names them.  TensorBoard is
written by :class:`syngrpo.rundir.runlog.RunLog` itself (a core dependency); every other
name is a plugin registered with ``register_trackers``, built on rank 0 only, and
fed the same numbers that go to ``metrics.jsonl``:

* :meth:`Tracker.start` once, with the resolved config (secrets redacted) and where the run resumes;
* :meth:`Tracker.log_metrics` every step (numbers only; ``None``/NaN left out);
* :meth:`Tracker.log_table` for evaluation results and sample completions;
* :meth:`Tracker.log_images` for the gallery (original beside synthesized);
* :meth:`Tracker.close` at the end.

A tracker that raises while logging is switched off for the rest of the run with
one warning: a tracker outage must never stop training (the run directory keeps
everything anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from syngrpo.config.io import redact_secrets

log = logging.getLogger(__name__)

#: the tracker the run log writes itself; the other names are plugins
TENSORBOARD = "tensorboard"


@runtime_checkable
class Tracker(Protocol):
    """What a tracker plugin's factory returns."""

    def start(self, *, run_dir: Path, run_name: str, config: Mapping[str, Any], start_step: int) -> None:
        """Open (or resume) the run; ``config`` is the resolved training config as plain data."""

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """One step's scalars (the keys of ``metrics.jsonl``, e.g. ``reward/total``)."""

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """A small table (evaluation metrics, sample completions)."""

    def log_images(self, name: str, images: Sequence[tuple[str, str]], step: int) -> None:
        """Images as ``(path, caption)`` pairs (the gallery: original and synthesized)."""

    def close(self) -> None:
        """Flush and finish the run."""


class TrackerSet:
    """The trackers of one run: calls each, and turns off (with one warning) any that fails."""

    def __init__(self, trackers: Mapping[str, Tracker]) -> None:
        self.trackers: dict[str, Tracker] = dict(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for name in list(self.trackers):
            try:
                getattr(self.trackers[name], method)(*args, **kwargs)
            except Exception as exc:  # a tracker outage never stops training
                log.warning("tracker %r failed in %s (%s: %s); it is off for the rest of this run", name, method,
                            type(exc).__name__, exc)
                self.trackers.pop(name, None)

    def start(self, *, config: Mapping[str, Any], **kwargs: Any) -> None:
        """Every tracker's :meth:`Tracker.start`, with the config's secrets redacted: a tracker uploads what it
        is given (W&B's config, MLflow's params and ``config.json`` artifact), so a secret never reaches one."""
        self._each("start", config=redact_secrets(dict(config)), **kwargs)

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        numbers = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")}
        if numbers:
            self._each("log_metrics", step, numbers)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        self._each("log_table", name, list(columns), [list(r) for r in rows], step)

    def log_images(self, name: str, images: Sequence[tuple[str, str]], step: int) -> None:
        self._each("log_images", name, list(images), step)

    def close(self) -> None:
        self._each("close")
        self.trackers.clear()


def build_trackers(registry: Any, names: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> TrackerSet:
    """The plugin trackers ``names`` asks for (TensorBoard excluded: the run log writes it)."""
    built: dict[str, Tracker] = {}
    for name in names:
        if name == TENSORBOARD:
            continue
        built[name] = registry.create("trackers", name, **dict(options.get(name, {})))
    return TrackerSet(built)
