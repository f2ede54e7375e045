"""The CPU study: Syn-GRPO against its baselines on the toy REC task, reported like the paper.

One study is: toy splits drawn once (train, validation and in-domain test on the
train style, an out-of-domain test on background styles the train split never
shows), one SFT warm start shared by every arm, then RL arms with the same number
of policy updates each, several seeds per arm, and the paper's outputs
(:mod:`.report`: ``table.md`` in Table 1's shape, the Fig. 2 / 7 / 8 analogues), plus
``kept/runs.jsonl``, the compact per-run data docs/study.md is regenerated from (:mod:`.kept`).

The test splits are only ever scored, never used to choose anything; every
setting of ``configs/study_rec_toy.yaml`` was chosen on the validation split
(docs/study.md).  Synthesis runs in ``sync`` mode through the ``inprocess``
transport: each step waits for its images, so what enters the pool does not
depend on timing, and the same command and seed give the same table on a CPU.
The arms are the paper's methods of :mod:`.methods`; several studies of the
same recipe pool with :mod:`.merge`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from syngrpo.config import TrainConfig
from syngrpo.experiments.config import (
    SPLIT_LABELS,
    SPLITS,
    StudyConfig,
    deep_merge,
    digest,
    load_study_config,
)
from syngrpo.experiments.kept import keep_run, write_runs
from syngrpo.experiments.merge import merge_studies
from syngrpo.experiments.methods import ARM_LABELS, ARMS, OFFLINE_ARMS
from syngrpo.experiments.report import (
    data_size_figure,
    data_size_table,
    results_table,
    write_figures,
    write_gallery_figure,
)
from syngrpo.experiments.stats import mean_std
from syngrpo.plugins import get_registry
from syngrpo.train.evaluate import EvalResult, evaluate_policy
from syngrpo.train.offline import run_offline
from syngrpo.train.trainer import Trainer

log = logging.getLogger(__name__)

# the names this module had before the package split (tests and notebooks import them from here)
__all__ = ["ARMS", "ARM_LABELS", "OFFLINE_ARMS", "SPLITS", "SPLIT_LABELS", "StudyConfig", "arm_config",
           "data_size_figure", "data_size_table", "deep_merge", "evaluate_splits", "load_study_config", "make_splits",
           "mean_std", "merge_studies", "results_table", "run_arm", "run_study", "warm_start", "write_figures",
           "write_gallery_figure"]

_digest = digest

# ---- data ------------------------------------------------------------------------------------


def make_splits(cfg: StudyConfig, out_dir: Path) -> dict[str, Path]:
    """Draw the toy splits into ``out_dir`` and return ``{split: jsonl path}`` (train, val, test_id, test_ood).

    ``test_ood`` holds the *same scenes* as ``test_id`` (image i has the same objects
    and expression), drawn on the out-of-domain backgrounds in turn, so the two test
    columns differ only in what the train split never showed.
    """
    d = cfg.data
    task = get_registry().create("tasks", cfg.task)
    common = dict(seed=d.seed, image_size=d.image_size, **d.options)
    paths: dict[str, Path] = {}
    for split, n in (("train", d.n_train), ("val", d.n_val), ("test", d.n_test)):
        task.make_toy_dataset(out_dir / split, n=n, split=split, style=d.train_style, **common)
        paths["test_id" if split == "test" else split] = out_dir / split / f"{split}.jsonl"
    ood = []
    for j, style in enumerate(d.ood_styles):
        drawn = task.make_toy_dataset(out_dir / f"test_ood_{style}", n=d.n_test, split="test", style=style, **common)
        ood += [s for i, s in enumerate(drawn) if i % len(d.ood_styles) == j]
    ood.sort(key=lambda s: s.id)
    paths["test_ood"] = out_dir / "test_ood.jsonl"
    task.save(ood, paths["test_ood"])
    return paths


# ---- one study -------------------------------------------------------------------------------


def evaluate_results(bundle: Any, task: Any, engine: Any, splits: dict[str, Sequence[Any]], cfg: StudyConfig,
                     response_mode: str = "syn") -> dict[str, EvalResult]:
    """Greedy evaluation of one model on every split, per image (the kept data needs each image's hit)."""
    return {name: evaluate_policy(bundle, task, samples, engine=engine, response_mode=response_mode,
                                  batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                                  progress=False)
            for name, samples in splits.items()}


def evaluate_splits(bundle: Any, task: Any, engine: Any, splits: dict[str, Sequence[Any]], cfg: StudyConfig,
                    response_mode: str = "syn") -> dict[str, dict[str, float]]:
    """Greedy Acc@0.5 / mean IoU of one model on every split."""
    return {name: dict(r.metrics) for name, r in
            evaluate_results(bundle, task, engine, splits, cfg, response_mode).items()}


def warm_start(cfg: StudyConfig, out_dir: Path, data: dict[str, Path],
               eval_splits: dict[str, Sequence[Any]]) -> tuple[Path, dict[str, Any]]:
    """Build the tiny policy, warm-start it on the train split, score it; reused when its inputs are unchanged.

    The recipe is the trainer's (:mod:`syngrpo.train.warm_start`); the study draws the vision pre-training
    split itself, in the train style only, so the out-of-domain backgrounds stay unseen.
    """
    from syngrpo.models.policy import load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy
    from syngrpo.plugins import get_registry
    from syngrpo.train.warm_start import WarmStartRecipe, run_warm_start

    if cfg.warm_start:
        return _reuse_warm_start(cfg, Path(cfg.warm_start), out_dir, eval_splits)
    sft_dir = out_dir / "sft"
    stamp = _digest({"policy": cfg.policy.model_dump(), "sft": cfg.sft.model_dump(), "data": cfg.data.model_dump(),
                     "seed": cfg.seed, "eval": cfg.eval.model_dump(),
                     "vision_pretrain": cfg.vision_pretrain.model_dump()})
    summary_path = sft_dir / "study_sft.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("stamp") == stamp:
            return sft_dir, summary
    registry = get_registry()
    task = registry.create("tasks", cfg.task)
    p = cfg.policy
    base = build_tiny_policy(out_dir / "policy", seed=p.seed, text_hidden=p.text_hidden, layers=p.layers,
                             vision_hidden=p.vision_hidden, vision_depth=p.vision_depth, vocab_size=p.vocab_size,
                             max_pixels=cfg.data.image_size ** 2)
    bundle = load_policy(str(base), device="cpu", dtype="float32")
    d, vp = cfg.data, cfg.vision_pretrain
    pretrain = (task.make_toy_dataset(out_dir / "pretrain", n=vp.n_images, split="pretrain", style=d.train_style,
                                      seed=d.seed, image_size=d.image_size, **d.options) if vp.steps > 0 else None)
    done = run_warm_start(bundle, task, task.load(data["train"]), WarmStartRecipe.of(cfg.sft, vp), mode="syn",
                          seed=cfg.seed, pretrain=pretrain)
    done.save(bundle, sft_dir)
    engine = registry.create("rollout_engines", cfg.engine, bundle=bundle)
    t0 = time.perf_counter()
    metrics = evaluate_splits(bundle, task, engine, eval_splits, cfg)
    summary = {"stamp": stamp, "vision_pretrain": done.vision or {"steps": 0}, "sft_seconds": done.sft_seconds,
               "eval_seconds": time.perf_counter() - t0, "loss_first": done.sft["loss_first"],
               "loss_last10": done.sft["loss_mean_last10"],
               "parameters": sum(q.numel() for q in bundle.model.parameters()), "metrics": metrics}
    summary_path.write_text(json.dumps(summary, indent=1))
    return sft_dir, summary


def _reuse_warm_start(cfg: StudyConfig, sft_dir: Path, out_dir: Path,
                      eval_splits: dict[str, Sequence[Any]]) -> tuple[Path, dict[str, Any]]:
    """An existing warm start, scored again on this study's splits (its own summary is kept beside)."""
    from syngrpo.models.policy import load_policy
    from syngrpo.plugins import get_registry

    if not (sft_dir / "study_sft.json").is_file():
        raise FileNotFoundError(f"warm_start {sft_dir} is not a finished study warm start (no study_sft.json); "
                                "point it at a study's sft/ directory")
    original = json.loads((sft_dir / "study_sft.json").read_text())
    summary_path = out_dir / "reused_sft.json"
    stamp = _digest({"from": str(sft_dir.resolve()), "original": original.get("stamp"),
                     "data": cfg.data.model_dump(), "eval": cfg.eval.model_dump()})
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("stamp") == stamp:
            return sft_dir, summary
    registry = get_registry()
    bundle = load_policy(str(sft_dir), device="cpu", dtype="float32")
    engine = registry.create("rollout_engines", cfg.engine, bundle=bundle)
    metrics = evaluate_splits(bundle, registry.create("tasks", cfg.task), engine, eval_splits, cfg)
    summary = {**original, "stamp": stamp, "reused_from": str(sft_dir), "metrics": metrics,
               "warm_start_stamp": original.get("warm_start_stamp", original.get("stamp"))}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=1))
    return sft_dir, summary


def arm_config(cfg: StudyConfig, arm: str, seed: int, sft_dir: Path, data: dict[str, Path], run_dir: Path) -> Any:
    """The TrainConfig of one (arm, seed) run: shared ``rl`` keys, the arm's keys, then the study's wiring."""
    wiring = {
        "seed": seed,
        "model": {"policy": str(sft_dir), "device": "cpu", "dtype": "float32"},
        "data": {"task": cfg.task, "train": str(data["train"]), "eval": str(data["val"])},
        # one warm start for every arm, all answering in its format (auto would read the same from its
        # sft_stats.json; a warm start written before syngrpo recorded it needs the word)
        "rollout": {"response_format": "syn"},
        "sft": {"enabled": False},
        "eval": {"at_start": False, "at_end": False, "every": 0},
        "logging": {"out_dir": str(run_dir), "tensorboard": False, "progress": False, "plots": False,
                    "samples_every": 0, "gallery_per_epoch": 1000},
    }
    merged = deep_merge(deep_merge(cfg.rl, ARMS[arm]), wiring)
    merged["rollout"].setdefault("engine", cfg.engine)  # the study's engine unless ``rl`` names one
    if arm in OFFLINE_ARMS:
        merged["offline"]["describer"] = cfg.describer
    if merged.get("synthesis", {}).get("mode", "off") != "off" or arm in OFFLINE_ARMS:
        synth = merged.setdefault("synthesis", {})
        synth["transport"] = cfg.transport
        synth.setdefault("transport_options", {})
        synth["transport_options"] = {"data_dir": str(run_dir / "server"), **synth["transport_options"]}
    return TrainConfig.model_validate(merged)


def run_arm(cfg: StudyConfig, arm: str, seed: int, sft_dir: Path, data: dict[str, Path],
            eval_splits: dict[str, Sequence[Any]], run_dir: Path) -> dict[str, Any]:
    """Train one arm with one seed and score it on every split; reused when already done."""
    result_path = run_dir / "study_result.json"
    train_cfg = arm_config(cfg, arm, seed, sft_dir, data, run_dir)
    stamp = _digest({"train": train_cfg.model_dump(mode="json"), "eval": cfg.eval.model_dump(),
                     "sft": (sft_dir / "study_sft.json").read_text() if (sft_dir / "study_sft.json").is_file() else ""})
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("stamp") == stamp:
            return done
    t0 = time.perf_counter()
    if arm in OFFLINE_ARMS:  # describe and synthesize the training set first, then plain GRPO on the result
        offline_file = run_dir / "offline" / "train.jsonl"
        if not offline_file.is_file():
            run_offline(train_cfg, offline_file.parent, say=lambda _: None)
        data = train_cfg.data.model_copy(update={"train": str(offline_file), "max_train_samples": None,
                                                  "image_root": None})
        train_cfg = train_cfg.model_copy(update={"data": data})
    with Trainer(train_cfg, run_dir) as trainer:
        trainer.train()
        t_train = time.perf_counter() - t0
        evals = evaluate_results(trainer.bundle, trainer.task, trainer.engine, eval_splits, cfg,
                                 response_mode=trainer.response_mode)
        steps = trainer.step
    kept = keep_run(run_dir, arm=arm, seed=seed, evals=evals)
    result = {"stamp": stamp, "arm": arm, "seed": seed, "steps": steps, "train_seconds": t_train,
              "seconds": time.perf_counter() - t0, "metrics": {k: dict(v.metrics) for k, v in evals.items()},
              "kept": kept}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def run_study(cfg: StudyConfig, out_dir: str | Path, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or finish) the whole study into ``out_dir`` and write its table and figures; returns the summary."""
    import torch

    torch.set_num_threads(1)  # a laptop's study; also makes CPU runs bit-reproducible across machines' core counts
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study_config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
    t0 = time.perf_counter()
    data = make_splits(cfg, out / "data")
    task = get_registry().create("tasks", cfg.task)
    eval_splits = {name: task.load(data[name]) for name in SPLITS}
    train = task.load(data["train"])
    chance = {name: task.chance_baselines(s, train) for name, s in eval_splits.items()}
    say(f"data: {len(train)} train, " + ", ".join(f"{k} {len(v)}" for k, v in eval_splits.items()))

    sft_dir, sft = warm_start(cfg, out, data, eval_splits)
    say(f"SFT warm start: {cfg.sft.steps} steps in {sft['sft_seconds']:.0f} s; Acc@0.5 "
        + ", ".join(f"{k} {v['acc@0.5']:.3f}" for k, v in sft["metrics"].items()))

    runs: list[dict[str, Any]] = []
    for arm in cfg.arms:
        for seed in range(cfg.seed, cfg.seed + cfg.seeds):
            res = run_arm(cfg, arm, seed, sft_dir, data, eval_splits, out / "runs" / f"{arm}-seed{seed}")
            runs.append(res)
            say(f"{arm} seed {seed}: {res['steps']} steps in {res['train_seconds']:.0f} s; Acc@0.5 "
                + ", ".join(f"{k} {v['acc@0.5']:.3f}" for k, v in res["metrics"].items()))

    summary = {"sft": sft, "chance": chance, "runs": runs, "seconds": time.perf_counter() - t0,
               "n": {k: len(v) for k, v in eval_splits.items()} | {"train": len(train)}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_runs([r["kept"] for r in runs if "kept" in r], out / "kept" / "runs.jsonl")
    table = results_table(summary, cfg)
    (out / "table.md").write_text(table)
    figures = write_figures(cfg, out)
    say(table)
    say("figures: " + ", ".join(str(p) for p in figures))
    return summary
