"""``syngrpo eval --benchmark``: a published protocol run on a policy, reported in the shape of the paper's tables.

A benchmark (:class:`~syngrpo.perception.benchmark.Benchmark`, a plugin) holds the protocol; this
module only runs it: it loads the prepared split (``data/<dataset>/<split>.jsonl``, written by
``syngrpo data prepare``), asks the benchmark for its subset, decodes greedily with the protocol's
batch size and token budget, in the model family's frame (``PromptBatch.frames``), and hands the
completions to the benchmark's score.  It writes, per benchmark, ``<name>.predictions.json`` (the
protocol, the metrics and one record per sample, the shape of VLM-R1's result files) and, for the
whole call, ``benchmarks.md`` (one table per paper table, the paper's rows beside this checkpoint's)
and ``benchmarks.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.data.images import load_rgb
from syngrpo.errors import ConfigError
from syngrpo.models.prompts import encode_prompts
from syngrpo.perception.benchmark import Benchmark


@dataclass
class BenchmarkRun:
    """One benchmark's result: its metrics, its per-sample records, and what was evaluated."""

    benchmark: Benchmark
    metrics: dict[str, float]
    records: list[dict[str, Any]]
    data_file: str
    split_size: int
    prompt_style: str
    #: ``--max-samples`` cut the protocol's subset: the number is not the published protocol's
    limited: bool = False
    notes: list[str] = field(default_factory=list)


def get_benchmark(registry: Any, name: str) -> Benchmark:
    """The registered benchmark ``name`` (an unknown one lists the installed benchmarks)."""
    bench = registry.create("benchmarks", name)
    if not isinstance(bench, Benchmark):
        raise ConfigError(f"benchmark {name!r} is a {type(bench).__name__}, not a syngrpo Benchmark")
    return bench


def run_benchmark(bench: Benchmark, bundle: Any, engine: Any, *, registry: Any, data_root: str | Path = "data",
                  data_file: str | Path | None = None, image_root: str | Path | None = None, limit: int | None = None,
                  max_new_tokens: int | None = None, response_mode: str = "syn", prompt_style: str = "run",
                  progress: bool = False) -> BenchmarkRun:
    """Run one benchmark's protocol with a loaded policy and engine (see the module docstring).

    ``limit`` and ``max_new_tokens`` cut the protocol short (smoke runs); the run is then marked ``limited``.
    """
    import torch

    if prompt_style not in bench.prompt_styles:
        raise ConfigError(f"benchmark {bench.name} has no prompt style {prompt_style!r}; it has: "
                          f"{', '.join(bench.prompt_styles)}")
    task = registry.create("tasks", bench.task, **bench.task_options)
    path = Path(data_file) if data_file is not None else Path(bench.data_file(str(data_root)))
    if not path.is_file():
        raise ConfigError(f"benchmark {bench.name}: {path} does not exist. Lay the dataset out first: `syngrpo data "
                          f"prepare {bench.dataset} --from DOWNLOAD --out {data_root}` (docs/data.md), or pass the "
                          "split's file with --split")
    samples = task.load(path, image_root=image_root)
    chosen = bench.select(samples, limit=limit)
    notes: list[str] = []
    texts: list[str] = []
    frames: list[Any] = []
    seen: list[Any] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen), desc=bench.name, unit="sample", dynamic_ncols=True)
    try:
        size = bench.protocol.batch_size
        for start in range(0, len(chosen), size):
            chunk = chosen[start : start + size]
            images = [load_rgb(s.image) for s in chunk]
            # the image as it is on disk decides the frame, as VLM-R1 opens it (a record's width/height may be stale)
            chunk = [s if (s.width, s.height) == im.size else s.evolve(width=im.width, height=im.height)
                     for s, im in zip(chunk, images, strict=True)]
            prompts = encode_prompts(bundle, images, [bench.prompt(task, s, response_mode=response_mode,
                                                                   style=prompt_style) for s in chunk])
            with torch.no_grad():
                rollout = engine.generate(bundle, prompts, num_generations=1, temperature=0.0, top_p=1.0,
                                          max_new_tokens=max_new_tokens or bench.protocol.max_new_tokens)
            texts.extend(rollout.texts)
            frames.extend(prompts.frames)
            seen.extend(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    resized = sum(1 for a, b in zip(chosen, seen, strict=True) if (a.width, a.height) != (b.width, b.height))
    if resized:
        notes.append(f"{resized} record(s) gave a width/height other than their image's; the image's was used")
    score = bench.score(task, texts, seen, frames, response_mode=response_mode)
    wanted = bench.protocol.subset or len(samples)
    short = max_new_tokens is not None and max_new_tokens < bench.protocol.max_new_tokens
    if short:
        notes.append(f"decoded at most {max_new_tokens} tokens, not the protocol's {bench.protocol.max_new_tokens}")
    return BenchmarkRun(bench, score.metrics, score.records, str(path), len(samples), prompt_style,
                        limited=short or (limit is not None and len(chosen) < min(wanted, len(samples))), notes=notes)


def write_predictions(run: BenchmarkRun, out_dir: str | Path) -> Path:
    """``<name>.predictions.json``: the protocol, the metrics and one record per sample."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bench = run.benchmark
    path = out / f"{bench.name}.predictions.json"
    path.write_text(json.dumps({
        "benchmark": bench.name, "description": bench.description, "task": bench.task,
        "task_options": bench.task_options, "data_file": run.data_file, "split_size": run.split_size,
        "protocol": dataclasses.asdict(bench.protocol), "prompt": run.prompt_style, "limited": run.limited,
        "notes": run.notes, "metrics": run.metrics, "results": run.records,
    }, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def paper_tables(runs: Sequence[BenchmarkRun], *, model: str | None = None, label: str = "this checkpoint") -> str:
    """One Markdown table per paper table the runs fill: the paper's rows (for ``model`` in Table 1) and this one.

    Benchmarks without a paper cell get a table of their own metrics.
    """
    by_table: dict[str, list[tuple[Any, BenchmarkRun]]] = {}
    loose = []
    for run in runs:
        if not run.benchmark.paper:
            loose.append(run)
        for cell in run.benchmark.paper:
            by_table.setdefault(cell.table, []).append((cell, run))
    parts = []
    for table, cells in by_table.items():
        rows: list[str] = []
        for cell, _ in cells:
            for row in cell.values:
                shown = _row_label(row, model)
                if shown is not None and shown not in rows:
                    rows.append(shown)
        header = "| Method | " + " | ".join(c.column for c, _ in cells) + " |"
        lines = [f"### {table}" + (f" ({model})" if model and any(" / " in r for c, _ in cells for r in c.values)
                                   else ""), "", header, "|---" * (len(cells) + 1) + "|"]
        for row in rows:
            vals = [next((f"{v:.2f}" for r, v in c.values.items() if _row_label(r, model) == row), "—")
                    for c, _ in cells]
            lines.append(f"| {row} | " + " | ".join(vals) + " |")
        ours = [_pct(run.metrics.get(c.metric)) + (" *" if run.limited else "") for c, run in cells]
        lines.append(f"| **{label}** | " + " | ".join(ours) + " |")
        if any(run.limited for _, run in cells):
            lines += ["", "\\* cut short (--max-samples / --max-new-tokens): not the protocol, not comparable with the paper"]
        parts.append("\n".join(lines))
    for run in loose:
        keys = run.benchmark.metrics or tuple(k for k in run.metrics if k != "n")
        lines = [f"### {run.benchmark.name}", "", "| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|",
                 f"| **{label}** | " + " | ".join(_pct(run.metrics.get(k)) for k in keys) + " |"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _row_label(row: str, model: str | None) -> str | None:
    """A paper row's label in the table of ``model`` (``None``: the row belongs to another model)."""
    if " / " not in row:
        return row
    row_model, _, method = row.partition(" / ")
    if model is None:
        return row
    return method if row_model == model else None


def evaluate_benchmarks(cfg: Any, checkpoint: str | Path, names: Sequence[str], *, data_root: str | Path = "data",
                        data_file: str | Path | None = None, image_root: str | Path | None = None,
                        out_dir: str | Path | None = None, limit: int | None = None,
                        max_new_tokens: int | None = None, prompt_style: str = "run",
                        paper_model: str | None = None, registry: Any = None, progress: bool = True
                        ) -> tuple[list[BenchmarkRun], Path]:
    """Load a checkpoint's policy once and run each named benchmark; returns the runs and the output folder."""
    from syngrpo.plugins import get_registry, load_local_plugins
    from syngrpo.scale.precision import Precision
    from syngrpo.train.components import policy_load_options
    from syngrpo.train.evaluate import load_checkpoint_policy, resolve_model_dir

    if registry is None:
        local = load_local_plugins(cfg.plugins)
        registry = get_registry(local) if local else get_registry()
    if data_file is not None and len(names) != 1:
        raise ConfigError("--split names one benchmark's file: give one --benchmark with it")
    benches = [get_benchmark(registry, n) for n in names]  # an unknown name fails before the model loads
    model_path = resolve_model_dir(checkpoint)
    out = Path(out_dir) if out_dir is not None else model_path.parent / "eval" / "benchmarks"
    precision = Precision.for_model(cfg.model.dtype, cfg.model.device)
    bundle = load_checkpoint_policy(model_path, **policy_load_options(cfg.model, precision, cfg.model.device,
                                                                      trains=False))
    engine = registry.create("rollout_engines", cfg.rollout.engine, bundle=bundle, **cfg.rollout.engine_options)
    runs = []
    try:
        for bench in benches:
            if hasattr(engine, "set_max_new_tokens"):  # an engine that sizes its sequences up front (vLLM)
                engine.set_max_new_tokens(max_new_tokens or bench.protocol.max_new_tokens)
            run = run_benchmark(bench, bundle, engine, registry=registry, data_root=data_root, data_file=data_file,
                                image_root=image_root, limit=limit, max_new_tokens=max_new_tokens,
                                response_mode=cfg.response_mode,
                                prompt_style=prompt_style, progress=progress)
            write_predictions(run, out)
            runs.append(run)
    finally:
        engine.close()
    model = paper_model or ("Qwen2.5-VL-7B" if "7b" in str(cfg.model.policy).lower() else "Qwen2.5-VL-3B")
    (out / "benchmarks.md").write_text(paper_tables(runs, model=model, label=f"this checkpoint ({model_path.name})"),
                                      encoding="utf-8")
    (out / "benchmarks.json").write_text(json.dumps({
        "checkpoint": str(model_path), "prompt": prompt_style,
        "benchmarks": {r.benchmark.name: {"metrics": r.metrics, "data_file": r.data_file, "limited": r.limited}
                       for r in runs}}, indent=1) + "\n", encoding="utf-8")
    return runs, out
