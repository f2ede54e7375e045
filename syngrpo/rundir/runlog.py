"""The run directory: everything a training run leaves behind to tell its story.

::

    <run dir>/
      config.yaml          the resolved config (what actually ran)
      metrics.jsonl        one JSON object per step (reward parts, H(q), V(q), smoothed V, KL, queue ...)
      samples.jsonl        a few completions per step, with their rewards
      train.log            what happened (server down / back, checkpoints, evaluations, warnings)
      warnings.jsonl       the run's health warnings (no completion parsed, no learning signal ...; health.py)
      events.out.tfevents* TensorBoard scalars (the same numbers as metrics.jsonl)
      plots/*.png          the curves of the paper's Fig. 2 and Fig. 7, rewards, synthesis
      gallery.html         original vs synthesized images per epoch, with descriptions (Fig. 5 / 8)
      gallery/             thumbnails for the gallery, and gallery.jsonl (its entries)
      synth/               synthesized images the pool trains on
      checkpoints/         see :mod:`syngrpo.rundir.checkpoint`
      eval/                evaluation results (JSON + markdown)

Plotting and TensorBoard are imported when used, so importing this module is cheap.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from syngrpo.rundir.health import HEALTH_STEPS, HealthWarning, HealthWatch
from syngrpo.rundir.progress import Progress

log = logging.getLogger(__name__)

#: (file name, title, panels): the plots written into ``plots/``; each panel is [(metric key, label)],
#: drawn one above the other against training progress (epochs)
PLOTS: list[tuple[str, str, list[list[tuple[str, str]]]]] = [
    (
        "fig2_entropy_diversity.png",
        "Entropy H(q) and diversity V(q) during training (Fig. 2)",
        [[("entropy", "entropy H(q)")], [("diversity/v_mean", "diversity V(q)")]],
    ),
    (
        "fig7_diversity_reward.png",
        "Diversity reward with and without smoothing (Fig. 7a)",
        [
            [("reward/diversity_raw", "R_diversity vs smoothed V (trained on)"),
             ("reward/diversity_unsmoothed", "R_diversity vs raw V")],
            [("diversity/v_mean", "batch mean V"), ("diversity/smoothed_mean", "smoothed V mean"),
             ("diversity/global_avg", "moving average G_k")],
        ],
    ),
    (
        "rewards.png",
        "Reward parts and evaluation",
        [[("reward/total", "total"), ("reward/accuracy", "R_acc"), ("reward/format", "R_format"),
          ("reward/diversity", "R_diversity")], [("eval/score", "eval (main metric)")]],
    ),
    (
        "synthesis.png",
        "Synthesis",
        [[("synthesis/in_flight", "jobs in flight"), ("synthesis/done", "done this step"),
          ("synthesis/failed", "failed this step")],
         [("pool/synthesized_fraction", "pool: synthesized share"), ("batch/synthesized_frac", "batch: synthesized share"),
          ("synthesis/server_healthy", "server healthy")]],
    ),
    (
        "optimisation.png",
        "Optimisation",
        [[("loss", "loss")], [("kl", "KL"), ("clip_frac", "clip fraction")], [("grad_norm", "grad norm")]],
    ),
]


def _jsonable(value: Any) -> Any:
    """Floats that JSON can hold (NaN/inf become null), tensors and numpy scalars as Python numbers."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL file (a torn last line, from a crash, is skipped)."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    if not path.is_file():
        return
    records = [r for r in read_jsonl(path) if keep(r)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


class RunLog:
    """Writes metrics, samples, TensorBoard scalars, plots and the gallery of one run directory.

    ``start_step`` is the step a resumed run continues after: records of later
    steps (written after the checkpoint, before the stop) are dropped, so the
    files read as if the run had never stopped.

    Every step record also goes through a :class:`~syngrpo.rundir.health.HealthWatch`: a run where no
    completion parses, or no group has a spread of rewards, for ``health_steps`` steps in a row gets a
    warning naming the likely cause (``response_format`` is the format the run asks for).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        total_steps: int | None = None,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
        plots: bool = True,
        gallery: bool = True,
        gallery_per_epoch: int = 12,
        trackers: Any = None,
        progress_interval_s: float | None = None,
        response_format: str | None = None,
        health_steps: int = HEALTH_STEPS,
    ) -> None:
        self.dir = Path(run_dir)
        #: the plugin trackers (W&B, MLflow ...) fed the same records: a :class:`syngrpo.rundir.trackers.TrackerSet`
        self.trackers = trackers
        self._start_step = start_step
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.samples_path = self.dir / "samples.jsonl"
        self.gallery_dir = self.dir / "gallery"
        self.gallery_index = self.gallery_dir / "gallery.jsonl"
        self.warnings_path = self.dir / "warnings.jsonl"
        self.plots_enabled = plots
        self.gallery_enabled = gallery
        self.gallery_per_epoch = gallery_per_epoch
        keep = lambda r: int(r.get("step", 0)) <= start_step  # noqa: E731
        for path in (self.metrics_path, self.samples_path, self.gallery_index, self.warnings_path):
            _truncate_jsonl(path, keep)
        self.health = HealthWatch(steps=health_steps, total_steps=total_steps, response_format=response_format)
        for record in read_jsonl(self.metrics_path):  # a resumed run's streaks go on where they were
            self.health.update(record)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.dir), purge_step=start_step + 1 if start_step else None)
            except ImportError as exc:  # pragma: no cover - tensorboard is a core dependency
                log.warning("TensorBoard logging is off: %s", exc)
        self._total = total_steps
        self._plain_every = max(1, (total_steps or 20) // 20)
        self._progress_on = progress
        self._progress_interval_s = progress_interval_s
        self._progress: Progress | None = None

    @classmethod
    def for_run(cls, run_dir: str | Path, logging_cfg: Any, *, total_steps: int, start_step: int = 0,
                trackers: Any = None, response_format: str | None = None) -> RunLog:
        """The run log a training config's ``logging`` section describes (``response_format``: the run's, for
        the health warnings)."""
        return cls(run_dir, total_steps=total_steps, start_step=start_step, tensorboard=logging_cfg.tensorboard_on,
                   progress=logging_cfg.progress, plots=logging_cfg.plots, gallery=logging_cfg.gallery,
                   gallery_per_epoch=logging_cfg.gallery_per_epoch, trackers=trackers,
                   progress_interval_s=logging_cfg.progress_interval_s, response_format=response_format)

    @property
    def progress(self) -> Progress:
        """The step bar on a terminal; elsewhere a plain line every ``total/20`` steps and at least every
        ``progress_interval_s`` seconds (:mod:`syngrpo.rundir.progress`). It starts with the first logged step
        (or :meth:`start_steps`), so setup and the data server's start are not counted as a slow first step."""
        if self._progress is None:
            self._progress = Progress("syn-grpo", self._total, initial=self._start_step, enabled=self._progress_on,
                                      leave=True, interval_s=self._progress_interval_s, announce=False)
        return self._progress

    def start_steps(self) -> None:
        """The training steps start now: their rate and ETA are measured from here."""
        self.progress.reset_clock()

    # ---- files --------------------------------------------------------------------------
    def write_config(self, text: str, data: Mapping[str, Any] | None = None) -> Path:
        """config.yaml; ``data`` (the same config as plain data) also starts the trackers' run."""
        path = self.dir / "config.yaml"
        path.write_text(text, encoding="utf-8")
        if self.trackers:
            self.trackers.start(run_dir=self.dir, run_name=self.dir.name, config=dict(data or {}),
                                start_step=self._start_step)
        return path

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One step's metrics: a line in metrics.jsonl, TensorBoard scalars, the progress bar."""
        record = {"step": int(step), **_jsonable(dict(metrics))}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, step)
        if self.trackers:
            self.trackers.log_metrics(step, {k: v for k, v in record.items() if k != "step"})
        for warning in self.health.update(record):
            self.warn(step, warning)
        if self.progress.plain:
            # no terminal (CI, a log file): the count, rate and ETA with the step's main numbers
            keys = ("reward/total", "reward/accuracy", "reward/format", "diversity/v_mean", "entropy",
                    "synthesis/in_flight", "pool/synthesized_fraction", "eval/score")
            short = {k: record[k] for k in keys if _number(record.get(k))}
            due = step % self._plain_every == 0 or step == self._total
            self.progress.update_to(step, short, force_line=due)
        else:
            short = {name: record[key] for key, name in (
                ("reward/total", "r"), ("reward/accuracy", "acc"), ("diversity/v_mean", "V"),
                ("synthesis/in_flight", "q"), ("pool/synthesized_fraction", "syn")) if _number(record.get(key))}
            self.progress.update_to(step, short)

    def samples(self, step: int, records: Iterable[Mapping[str, Any]]) -> None:
        """Completions with their rewards, to read what the policy writes."""
        records = [_jsonable(dict(r)) for r in records]
        with self.samples_path.open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps({"step": int(step), **r}) + "\n")
        if self.trackers and records:
            rows = [[r.get("sample_id"), r.get("problem"), c.get("text"), c.get("reward"), c.get("advantage")]
                    for r in records for c in r.get("completions", [])]
            self.trackers.log_table("samples", ["sample_id", "problem", "completion", "reward", "advantage"], rows,
                                    step)

    def eval_table(self, step: int, metrics: Mapping[str, Any]) -> None:
        """An evaluation's metrics as a table for the trackers (the files are in ``eval/``)."""
        if self.trackers:
            self.trackers.log_table("eval", ["metric", "value"], [[k, v] for k, v in metrics.items()], step)

    def message(self, text: str, *, level: int = logging.INFO) -> None:
        """A line for the user (stderr, without breaking the progress bar) and for ``train.log``."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with (self.dir / "train.log").open("a", encoding="utf-8") as f:
            f.write(f"{stamp} {logging.getLevelName(level)} {text}\n")
        if self._progress is not None and self._progress.bar:
            self._progress.write(text if level < logging.WARNING else f"{logging.getLevelName(level)}: {text}")
        else:
            log.log(level, text)

    def warn(self, step: int, warning: HealthWarning) -> None:
        """A health warning: in ``train.log`` and on the terminal at WARNING, kept in ``warnings.jsonl`` for the summary."""
        self.message(warning.message, level=logging.WARNING)
        with self.warnings_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **warning.to_dict()}) + "\n")

    # ---- gallery ------------------------------------------------------------------------
    def gallery_add(self, *, step: int, epoch: int, origin_id: str, original: str | Path, synthesized: str | Path,
                    description: str, generation: int = 1, key: str = "") -> bool:
        """Remember one original/synthesized pair (at most ``gallery_per_epoch`` per epoch)."""
        if not self.gallery_enabled:
            return False
        entries = [e for e in read_jsonl(self.gallery_index) if e.get("epoch") == epoch]
        if len(entries) >= self.gallery_per_epoch:
            return False
        self.gallery_dir.mkdir(parents=True, exist_ok=True)
        stem = f"e{epoch}-s{step}-{_safe(origin_id)}-g{generation}"
        orig_thumb = _thumbnail(original, self.gallery_dir / f"{stem}-original.jpg")
        syn_thumb = _thumbnail(synthesized, self.gallery_dir / f"{stem}-synth.jpg")
        if orig_thumb is None or syn_thumb is None:
            return False
        entry = {"step": step, "epoch": epoch, "origin_id": origin_id, "original": orig_thumb.name,
                 "synthesized": syn_thumb.name, "description": description, "generation": generation, "key": key}
        with self.gallery_index.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if self.trackers:
            self.trackers.log_images("gallery", [(str(orig_thumb), f"original {origin_id}"),
                                                 (str(syn_thumb), f"synthesized: {description}")], step)
        return True

    def write_gallery(self) -> Path | None:
        """gallery.html: per epoch, each original beside what it became, with the description used."""
        if not self.gallery_enabled:
            return None
        entries = read_jsonl(self.gallery_index)
        by_epoch: dict[int, list[dict[str, Any]]] = {}
        for e in entries:
            by_epoch.setdefault(int(e["epoch"]), []).append(e)
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>syngrpo gallery</title><style>",
            "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
            "padding:6px;vertical-align:top} img{max-width:256px;image-rendering:pixelated} td.d{max-width:28em}",
            "</style></head><body><h1>Original vs synthesized images</h1>",
            f"<p>{len(entries)} pairs. The synthesized image keeps the labelled foreground of the original and "
            "repaints the rest from the description the policy wrote (eq. 8 picks it).</p>",
        ]
        if not entries:
            parts.append("<p><em>No synthesized image has entered the pool yet.</em></p>")
        for epoch in sorted(by_epoch):
            parts.append(f"<h2>Epoch {epoch + 1}</h2><table><tr><th>original</th><th>synthesized</th>"
                         "<th>description</th><th>sample</th></tr>")
            for e in by_epoch[epoch]:
                parts.append(
                    f"<tr><td><img src='gallery/{html.escape(e['original'])}'></td>"
                    f"<td><img src='gallery/{html.escape(e['synthesized'])}'></td>"
                    f"<td class='d'>{html.escape(str(e['description']))}</td>"
                    f"<td>{html.escape(str(e['origin_id']))}<br>step {e['step']}<br>generation {e['generation']}</td></tr>"
                )
            parts.append("</table>")
        parts.append("</body></html>")
        path = self.dir / "gallery.html"
        path.write_text("\n".join(parts), encoding="utf-8")
        return path

    # ---- plots --------------------------------------------------------------------------
    def write_plots(self) -> list[Path]:
        """The PNG curves (matplotlib, Agg backend) from metrics.jsonl; x is training progress in epochs."""
        if not self.plots_enabled:
            return []
        return write_plots(read_jsonl(self.metrics_path), self.dir / "plots")

    def close(self) -> None:
        if self.trackers:
            self.trackers.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        if self._progress is not None:
            self._progress.close()


def write_plots(records: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Draw :data:`PLOTS` from metric records; panels (and plots) with no data are left out."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, title, panels in PLOTS:
        drawn_panels = []
        for series in panels:
            lines = []
            for key, label in series:
                points = [(r.get("progress", r["step"]), r[key]) for r in records
                          if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
                          and math.isfinite(r[key])]
                if points:
                    lines.append((label, points))
            if lines:
                drawn_panels.append(lines)
        if not drawn_panels:
            continue
        fig, axes = plt.subplots(len(drawn_panels), 1, figsize=(7, 2.6 * len(drawn_panels) + 0.6), sharex=True,
                                 squeeze=False)
        for ax, lines in zip(axes[:, 0], drawn_panels, strict=True):
            for label, points in lines:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0, 0].set_title(title)
        axes[-1, 0].set_xlabel("training progress (epochs)")
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))[:60]


def _thumbnail(src: str | Path, dst: Path, size: int = 256) -> Path | None:
    from PIL import Image

    try:
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            im.save(dst, "JPEG", quality=90)
    except (OSError, ValueError) as exc:
        log.warning("gallery: cannot read image %s: %s", src, exc)
        return None
    return dst
