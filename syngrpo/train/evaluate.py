"""Greedy evaluation of a policy on a task split, with the task's own metrics.

The paper evaluates REC with Acc@0.5 and OVD / ISR with mAP, GP and GR (§4,
"Evaluation Metric"); each task's :meth:`~syngrpo.perception.task.Task.evaluate` computes
its metrics, so this module only decodes, parses and reports.

Predictions are made in the model-input frame (the processor resizes images);
the task maps them back to the original image with the frame of each prompt,
so metrics are computed against the labels as the dataset wrote them.

An answer without ``<answer>`` tags is read from the whole completion (a base
model that ignores the format still gets its boxes scored); the ``format``
metric reports how many completions followed the format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.data.images import load_sample_images
from syngrpo.errors import ConfigError
from syngrpo.models.policy import load_policy
from syngrpo.perception.response import parse_response
from syngrpo.perception.task import Task
from syngrpo.plugins import get_registry
from syngrpo.rundir.checkpoint import latest_checkpoint, model_dir
from syngrpo.rundir.progress import Progress
from syngrpo.scale.precision import Precision
from syngrpo.train.components import policy_load_options
from syngrpo.train.data import load_split
from syngrpo.types import Sample


@dataclass
class EvalResult:
    """Split-level metrics and one record per sample (completion, parsed answer, accuracy)."""

    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def headline(self) -> tuple[str, float] | None:
        """The task's main metric: the first one its ``evaluate`` returned."""
        for key, value in self.metrics.items():
            if key not in ("format", "accuracy_reward", "n"):
                return key, value
        return None


def build_prompts(task: Task, samples: Sequence[Sample], mode: str) -> list[str]:
    """The text of each prompt: the task's question plus the response-format instructions."""
    from syngrpo.perception.response import build_instruction

    return [build_instruction(task.question(s), mode) for s in samples]  # type: ignore[arg-type]


def evaluate_policy(
    bundle: Any,
    task: Task,
    samples: Sequence[Sample],
    *,
    engine: Any,
    response_mode: str = "syn",
    batch_size: int = 16,
    max_new_tokens: int = 256,
    progress: bool = False,
    desc: str = "eval",
    progress_interval_s: float | None = None,
) -> EvalResult:
    """Decode every sample greedily (one completion each) and score the split with ``task.evaluate``.

    ``progress``: a bar on a terminal, else a plain line (count, rate, ETA) at least every
    ``progress_interval_s`` seconds, also while one batch decodes."""
    import torch

    from syngrpo.models.policy import encode_prompts

    if not samples:
        raise ValueError("evaluation needs at least one sample")
    predictions: list[Any] = []
    frames = []
    records: list[dict[str, Any]] = []
    bar = Progress(desc, len(samples), unit="sample", enabled=progress, interval_s=progress_interval_s)
    try:
        for start in range(0, len(samples), batch_size):
            chunk = list(samples[start : start + batch_size])
            prompts = encode_prompts(bundle, [load_sample_images(s) for s in chunk],
                                     build_prompts(task, chunk, response_mode), box_images=[s.box_image for s in chunk])
            with torch.no_grad():
                rollout = engine.generate(bundle, prompts, num_generations=1, temperature=0.0, top_p=1.0,
                                          max_new_tokens=max_new_tokens)
            for sample, text, frame in zip(chunk, rollout.texts, prompts.frames, strict=True):
                parsed = parse_response(text, response_mode)  # type: ignore[arg-type]
                prediction = task.parse_answer(task.answer_text(parsed, whole_text_fallback=True))
                accuracy = task.accuracy(prediction, sample, frame=frame)
                predictions.append(prediction)
                frames.append(frame)
                records.append({
                    "id": sample.id,
                    "completion": text,
                    "prediction": _plain(prediction),
                    "accuracy": float(accuracy),
                    "well_formed": parsed.well_formed,
                })
            bar.update(len(chunk))
    finally:
        bar.close()
    metrics = {k: float(v) for k, v in task.evaluate(predictions, list(samples), frames=frames).items()}
    metrics["format"] = sum(r["well_formed"] for r in records) / len(records)
    metrics["accuracy_reward"] = sum(r["accuracy"] for r in records) / len(records)
    metrics["n"] = float(len(records))
    return EvalResult(metrics=metrics, records=records)


def _plain(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def markdown_table(metrics: dict[str, float], *, title: str = "") -> str:
    """Metrics as a Markdown table (fractions shown as percentages, as the paper's tables do)."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if key == "n":
            lines.append(f"| samples | {int(value)} |")
        elif isinstance(value, float) and math.isfinite(value):
            lines.append(f"| {key} | {100 * value:.2f} |")
        else:
            lines.append(f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def write_report(result: EvalResult, out_dir: str | Path, *, name: str = "eval",
                 info: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """``<name>.json`` (metrics + info), ``<name>.md`` (a table) and ``<name>.predictions.jsonl``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps({**(info or {}), "metrics": result.metrics}, indent=2), encoding="utf-8")
    title = " ".join(f"{k}={v}" for k, v in (info or {}).items() if k in ("task", "split", "step"))
    md_path = out / f"{name}.md"
    md_path.write_text(markdown_table(result.metrics, title=title or name), encoding="utf-8")
    with (out / f"{name}.predictions.jsonl").open("w", encoding="utf-8") as f:
        for r in result.records:
            f.write(json.dumps(r) + "\n")
    return json_path, md_path


def resolve_model_dir(checkpoint: str | Path) -> Path:
    """A model directory from a run directory (its latest checkpoint), a checkpoint, or a model directory."""
    p = Path(checkpoint)
    if (p / "config.json").is_file():
        return p
    ckpt = latest_checkpoint(p)
    if ckpt is not None and (model_dir(ckpt) / "config.json").is_file():
        return model_dir(ckpt)
    raise ConfigError(f"--checkpoint {str(p)!r} is neither a model directory, a checkpoint nor a run directory "
                      "with checkpoints")


def load_checkpoint_policy(checkpoint: str | Path, **load_kwargs: Any) -> Any:
    """The policy of a run directory (its latest checkpoint), a checkpoint or a model directory.

    A sharded checkpoint (an FSDP run's: config in ``model/``, weights in ``sharded/``) is consolidated
    on demand, in memory, by :func:`~syngrpo.models.policy.load_policy`: its whole model is read from the
    shards into this process and nothing is written into the checkpoint (``syngrpo eval``, ``syngrpo export``).
    """
    return load_policy(resolve_model_dir(checkpoint), **load_kwargs)


def evaluate_checkpoint(cfg: Any, checkpoint: str | Path, *, split: str | None = None, out_dir: str | Path | None = None,
                        batch_size: int | None = None, progress: bool = True,
                        registry: Any | None = None) -> tuple[EvalResult, Path, Path]:
    """Load a checkpoint's policy and evaluate it on a split (``syngrpo eval``); returns result and report paths."""
    registry = registry or get_registry()
    model_path = resolve_model_dir(checkpoint)
    if split is not None:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"split": split})})
    out = Path(out_dir) if out_dir is not None else model_path.parent / "eval"
    task = registry.create("tasks", cfg.data.task, **cfg.data.task_options)
    samples = load_split(cfg, task, "eval", out)
    # the model section read as training reads it; nothing is updated, so the weights load in the compute dtype
    precision = Precision.for_model(cfg.model.dtype, cfg.model.device)
    bundle = load_checkpoint_policy(model_path, **policy_load_options(cfg.model, precision, cfg.model.device,
                                                                      trains=False))
    engine = registry.create("rollout_engines", cfg.rollout.engine, bundle=bundle, **cfg.rollout.engine_options)
    if hasattr(engine, "set_max_new_tokens"):  # an engine that sizes its sequences up front (vLLM)
        engine.set_max_new_tokens(cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens)
    most = max((s.num_images for s in samples), default=1)
    if most > 1 and hasattr(engine, "set_max_images"):  # an engine that budgets images up front (vLLM)
        engine.set_max_images(most)
    try:
        result = evaluate_policy(bundle, task, samples, engine=engine, response_mode=cfg.response_mode,
                                 batch_size=batch_size or cfg.eval.batch_size,
                                 max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                                 progress=progress)
    finally:
        engine.close()
    split_name = cfg.eval.split or cfg.data.eval or "toy"
    json_path, md_path = write_report(result, out, name=f"eval-{Path(split_name).stem}",
                                      info={"task": cfg.data.task, "split": split_name,
                                            "checkpoint": str(model_path)})
    return result, json_path, md_path
