"""The main job's claim with its control: the quickstart's Syn-GRPO against plain GRPO from the same warm start.

``syngrpo train`` (the quickstart) says what Syn-GRPO adds to the shipped warm start. The control runs that
command as shipped (the ``syn_grpo`` arm) and with its one switch, ``synthesis.mode: off`` (the ``grpo`` arm: plain
GRPO on the same answers, :mod:`.methods`), on the same seeds, and scores every final policy greedily on a
held-out split far larger than the quickstart's own (its eval split extended: image *i* of a toy split depends
only on (seed, split, i), so the quickstart's 96 are the first 96 of them). Other methods of :data:`.methods.ARMS`
can join (``arms:``), each on top of the quickstart config; ``grpo_offline`` writes its training set first.

The report (:mod:`.regenerate`) pairs the arms by seed and image: the difference with a paired bootstrap interval
and the paired t interval. The runs are the quickstart's: a spawned aiohttp data server and ``async`` synthesis,
so which synthesized images a step sees depends on timing and a seed does not repeat exactly (the toy study's
``sync`` in-process runs do).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from syngrpo.config import QUICKSTART_CONFIG, SHIPPED_POLICIES, TrainConfig
from syngrpo.config.io import StrictModel, load_config, load_yaml
from syngrpo.errors import ConfigError
from syngrpo.experiments.config import deep_merge, digest
from syngrpo.experiments.kept import keep_run, write_runs
from syngrpo.experiments.methods import ARMS, OFFLINE_ARMS
from syngrpo.plugins import get_registry
from syngrpo.train.evaluate import evaluate_policy
from syngrpo.train.offline import run_offline
from syngrpo.train.trainer import Trainer

#: the split every final policy is scored on
HELDOUT = "heldout"


class ControlConfig(StrictModel):
    """``configs/quickstart_control.yaml``."""

    #: the main job's config (the quickstart as shipped)
    base: str = str(QUICKSTART_CONFIG)
    #: methods of :data:`syngrpo.experiments.methods.ARMS`; ``syn_grpo`` is the base config unchanged
    arms: list[str] = Field(default_factory=lambda: ["grpo", "syn_grpo"])
    seed: int = 0
    seeds: int = Field(8, ge=2)
    #: held-out images (the base config's eval split, extended)
    n_heldout: int = Field(500, ge=1)
    eval_batch_size: int = Field(50, ge=1)
    #: TrainConfig keys every arm shares on top of the base (none: the main job as shipped)
    train: dict[str, Any] = Field(default_factory=dict)


def load_control_config(path: str | Path, overrides: Sequence[str] = ()) -> ControlConfig:
    cfg = load_config(ControlConfig, path, overrides)
    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"{path}: unknown arm(s) {unknown}; arms are {', '.join(ARMS)}")
    return cfg


def arm_keys(arm: str) -> dict[str, Any]:
    """The keys an arm sets on the main job: none for ``syn_grpo`` (the quickstart is Syn-GRPO as configured:
    async, its spawned server), the method's own otherwise."""
    return {} if arm == "syn_grpo" else ARMS[arm]


def train_config(cfg: ControlConfig, arm: str, seed: int, run_dir: Path) -> TrainConfig:
    keys = deep_merge(deep_merge(cfg.train, arm_keys(arm)), {
        "seed": seed, "eval": {"at_start": False, "at_end": False, "every": 0},
        "logging": {"out_dir": str(run_dir), "tensorboard": False, "progress": False, "plots": False}})
    return TrainConfig.model_validate(deep_merge(load_yaml(cfg.base), keys))


def heldout_split(cfg: ControlConfig, out: Path) -> list[Any]:
    """The base config's eval split, ``n_heldout`` images (the quickstart's 96 are its first)."""
    base = TrainConfig.model_validate(load_yaml(cfg.base))
    toy = base.data.toy
    task = get_registry().create("tasks", base.data.task)
    path = out / "data" / HELDOUT / f"{HELDOUT}.jsonl"
    if not path.is_file():
        samples = task.make_toy_dataset(out / "data" / HELDOUT, n=cfg.n_heldout, seed=toy.seed, split="eval",
                                        image_size=toy.image_size, **toy.options)
        task.save(samples, path)
    return task.load(path)


def run_one(cfg: ControlConfig, out: Path, arm: str, seed: int, heldout: list[Any]) -> dict[str, Any]:
    """One run of the main job (``arm`` on ``seed``) and its held-out evaluation; reused when already done."""
    run_dir = out / "runs" / f"{arm}-seed{seed}"
    result_path = run_dir / "result.json"
    tc = train_config(cfg, arm, seed, run_dir)
    stamp = digest({"train": tc.model_dump(mode="json"), "n": len(heldout)})
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("stamp") == stamp:
            return done
    t0 = time.perf_counter()
    if arm in OFFLINE_ARMS:  # the training set first: originals + images synthesized before training
        offline = run_dir / "offline" / "train.jsonl"
        if not offline.is_file():
            run_offline(tc, offline.parent, say=lambda _: None)
        tc = tc.model_copy(update={"data": tc.data.model_copy(update={"train": str(offline), "image_root": None})})
    with Trainer(tc, run_dir) as trainer:
        trainer.train()
        t_train = time.perf_counter() - t0
        with trainer.sampling():
            result = evaluate_policy(trainer.bundle, trainer.task, heldout, engine=trainer.engine,
                                     response_mode=trainer.response_mode, batch_size=cfg.eval_batch_size,
                                     max_new_tokens=tc.eval.max_new_tokens or tc.rollout.max_new_tokens)
    kept = keep_run(run_dir, arm=arm, seed=seed, evals={HELDOUT: result},
                    extra={"train_seconds": round(t_train, 1), "response_mode": trainer.response_mode,
                           "diversity_weight": tc.diversity_weight})
    done = {"stamp": stamp, "arm": arm, "seed": seed, "seconds": time.perf_counter() - t0, "kept": kept}
    result_path.write_text(json.dumps(done))
    return done


def start_row(cfg: ControlConfig, out: Path, heldout: list[Any]) -> dict[str, Any]:
    """The warm start every arm starts from, scored on the held-out split (the "before RL" row)."""
    from syngrpo.models.policy import load_policy

    path = out / "start_eval.json"
    base = TrainConfig.model_validate(load_yaml(cfg.base))
    stamp = digest({"policy": base.model.policy, "n": len(heldout)})
    if path.is_file():
        got = json.loads(path.read_text())
        if got.get("stamp") == stamp:
            return got
    registry = get_registry()
    where = str(SHIPPED_POLICIES.get(base.model.policy, base.model.policy))
    bundle = load_policy(where, device="cpu", dtype="float32")
    result = evaluate_policy(bundle, registry.create("tasks", base.data.task), heldout,
                             engine=registry.create("rollout_engines", "hf", bundle=bundle),
                             response_mode=base.response_mode, batch_size=cfg.eval_batch_size,
                             max_new_tokens=base.eval.max_new_tokens or base.rollout.max_new_tokens)
    row = {"stamp": stamp, **keep_run(out, arm="warm_start", seed=-1, evals={HELDOUT: result}), "curves": {}}
    path.write_text(json.dumps(row))
    return row


def run_control(cfg: ControlConfig, out_dir: str | Path, *, shard: tuple[int, int] = (0, 1),
                say: Callable[[str], None] = print) -> None:
    """Every (arm, seed) run of this shard, then the kept data (``kept/``) from every finished run."""
    import torch

    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "control_config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
    heldout = heldout_split(cfg, out)
    index, count = shard
    if index == 0:
        start = start_row(cfg, out, heldout)
        say(f"warm start on {len(heldout)} held-out images: Acc@0.5 "
            f"{100 * start['eval'][HELDOUT]['metrics']['acc@0.5']:.1f} %")
    todo = [(arm, seed) for seed in range(cfg.seed, cfg.seed + cfg.seeds) for arm in cfg.arms]
    for k, (arm, seed) in enumerate(todo):
        if k % count != index:
            continue
        done = run_one(cfg, out, arm, seed, heldout)
        say(f"{arm} seed {seed}: Acc@0.5 {100 * done['kept']['eval'][HELDOUT]['metrics']['acc@0.5']:.1f} % "
            f"({done['seconds']:.0f} s; {k + 1}/{len(todo)})")
        write_kept(cfg, out)
    write_kept(cfg, out)


def write_kept(cfg: ControlConfig, out: Path) -> None:
    """``kept/experiment.json`` (the config, the warm start's row) and ``kept/runs.jsonl``."""
    kept = out / "kept"
    kept.mkdir(exist_ok=True)
    start = json.loads((out / "start_eval.json").read_text()) if (out / "start_eval.json").is_file() else None
    doc = {"experiment": "quickstart-control", "config": cfg.model_dump(mode="json"),
           "start": None if start is None else {k: v for k, v in start.items() if k != "stamp"}}
    (kept / "experiment.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    write_runs([json.loads(p.read_text())["kept"] for p in sorted((out / "runs").glob("*/result.json"))],
               kept / "runs.jsonl")
