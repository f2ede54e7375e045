"""The CPU study: Syn-GRPO against plain GRPO on the toy REC task, reported like the paper.

One study is: toy splits drawn once (train, validation and in-domain test on the
train style, an out-of-domain test on background styles the train split never
shows), one SFT warm start shared by every arm, then RL arms with the same number
of policy updates each, several seeds per arm, and the paper's outputs:

* ``table.md`` -- Table 1 shape: Acc@0.5 (%) per split, mean ± std over seeds;
* ``fig2_entropy_diversity.png`` -- entropy H(q) and diversity V(q) against
  training progress per arm (paper Fig. 2);
* ``fig7_diversity_smoothing.png`` -- the diversity reward with the smoothed
  target (eq. 6) and with the raw one (eq. 5), per step of the Syn-GRPO arm (Fig. 7a);
* ``fig8_gallery.png`` -- one source image and what the data server made of it
  at successive epochs (Fig. 8).

The test splits are only ever scored, never used to choose anything; every
setting of ``configs/study_rec_toy.yaml`` was chosen on the validation split
(docs/study.md).  Synthesis runs in ``sync`` mode through the ``inprocess``
transport: each step waits for its images, so what enters the pool does not
depend on timing, and the same command and seed give the same table on a CPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from syngrpo.config import TrainConfig
from syngrpo.config.io import StrictModel, apply_overrides, load_config, validate
from syngrpo.errors import ConfigError
from syngrpo.plugins import get_registry
from syngrpo.rundir.runlog import read_jsonl
from syngrpo.train.evaluate import evaluate_policy
from syngrpo.train.offline import run_offline
from syngrpo.train.trainer import Trainer

log = logging.getLogger(__name__)

#: the arms of the study: TrainConfig keys each arm sets on top of the shared ``rl`` section
# Every arm writes the syn response format (one shared warm start), and the trainer rewards <score> with
# R_diversity whenever the format is syn: the GRPO arms turn that term off explicitly.
ARMS: dict[str, dict[str, Any]] = {
    "grpo": {"synthesis": {"mode": "off"}, "rewards": {"diversity_weight": 0.0}},
    "syn_grpo_no_div": {"synthesis": {"mode": "sync", "description_selection": "random"},
                        "rewards": {"diversity_weight": 0.0}},
    "syn_grpo": {"synthesis": {"mode": "sync", "description_selection": "diversity"}},
    "grpo_entropy": {"synthesis": {"mode": "off"}, "rewards": {"diversity_weight": 0.0},
                     "algorithm": {"policy_loss": {"name": "entropy_loss"}}},
    "grpo_entropy_adv": {"synthesis": {"mode": "off"}, "rewards": {"diversity_weight": 0.0},
                         "algorithm": {"policy_loss": {"name": "entropy_advantage"}}},
    # plain GRPO on originals + images synthesized before training (syngrpo.train.offline), described by the
    # study's ``describer`` (default ``template``: no hosted model here, so a model-free one stands in for GPT-4o)
    "grpo_offline": {"synthesis": {"mode": "off"}, "rewards": {"diversity_weight": 0.0},
                     "offline": {"variants": 1}},
}
#: arms whose training data is written by offline generation first (:func:`run_arm`)
OFFLINE_ARMS = frozenset(arm for arm, keys in ARMS.items() if "offline" in keys)
#: row labels of the table, in the paper's words
ARM_LABELS = {
    "grpo": "GRPO",
    "syn_grpo_no_div": "Syn-GRPO w/o R_diversity",
    "syn_grpo": "Syn-GRPO",
    "grpo_entropy": "GRPO + Entropy Loss",
    "grpo_entropy_adv": "GRPO + Entropy Adv.",
    "grpo_offline": "GRPO + Offline Generation",
}
SPLITS = ("val", "test_id", "test_ood")
SPLIT_LABELS = {"val": "Validation (train style)", "test_id": "In-domain test", "test_ood": "Out-of-domain test"}


class StudyData(StrictModel):
    """The toy REC splits; ``options`` go to ``make_rec_toy`` (grid, position_code, n_shapes ...)."""

    seed: int = 0
    image_size: int = Field(112, ge=28)
    n_train: int = Field(300, ge=1)
    n_val: int = Field(64, ge=1)
    n_test: int = Field(120, ge=1)
    train_style: str = "plain"
    #: background styles of the out-of-domain test, never seen in training
    ood_styles: list[str] = Field(default_factory=lambda: ["textured", "cluttered", "ood"])
    options: dict[str, Any] = Field(default_factory=dict)


class StudyPolicy(StrictModel):
    """``build_tiny_policy`` options of the shared starting model."""

    seed: int = 0
    text_hidden: int = 128
    layers: int = 4
    vision_hidden: int = 64
    vision_depth: int = 2
    vocab_size: int = 640


class StudySFT(StrictModel):
    """The warm start every arm starts from."""

    steps: int = Field(600, ge=1)
    #: plain-format steps before ``steps`` syn-format ones: cheaper (shorter targets), they teach the
    #: localisation (the quickstart's recipe, :class:`syngrpo.config.SFTConfig`)
    plain_steps: int = Field(0, ge=0)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    #: loss weight of the answer tokens (``syngrpo.train.sft.sft_loss``)
    answer_weight: float = Field(1.0, gt=0)


class StudyVisionPretrain(StrictModel):
    """Dense pre-training of the random vision tower (:mod:`syngrpo.train.vision_pretrain`) before SFT.

    Stands in for the pretrained encoder the paper starts from; on images of its own
    split (``pretrain``), disjoint from train, val and the tests.  ``steps: 0`` skips it.
    """

    steps: int = Field(300, ge=0)
    n_images: int = Field(1000, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    #: also teach each object's centre token the object's label (``pretrain_vision(object_labels=True)``)
    object_labels: bool = False


class StudyEval(StrictModel):
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(80, ge=1)


class StudyConfig(StrictModel):
    """Everything ``syngrpo study`` needs; ``quick`` is deep-merged over the rest by ``--quick``."""

    #: the task every split, warm start and arm uses (registered name; its toy generator draws the splits)
    task: str = "rec"
    #: the rollout engine that scores the warm start on every split
    engine: str = "hf"
    #: the trainer-to-data-server transport of the arms that synthesize (in-process: no HTTP, ``sync`` waits,
    #: so the same seed gives the same table)
    transport: str = "inprocess"
    #: who describes the images of the offline-generation arm (``grpo_offline``) before training
    describer: str = "template"
    seed: int = 0
    #: seeds per arm (RL seeds ``seed .. seed + seeds - 1``; data and SFT use ``seed``)
    seeds: int = Field(3, ge=1)
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    data: StudyData = Field(default_factory=StudyData)
    policy: StudyPolicy = Field(default_factory=StudyPolicy)
    #: start every arm from this finished warm start (a study's ``sft/`` directory) instead of building one:
    #: the data-size ablation varies the RL train split under one shared warm start
    warm_start: str | None = None
    vision_pretrain: StudyVisionPretrain = Field(default_factory=StudyVisionPretrain)
    sft: StudySFT = Field(default_factory=StudySFT)
    #: TrainConfig keys shared by every arm (nested, as in a ``syngrpo train`` config)
    rl: dict[str, Any] = Field(default_factory=dict)
    eval: StudyEval = Field(default_factory=StudyEval)
    quick: dict[str, Any] = Field(default_factory=dict)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; nested dicts merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_study_config(path: str | Path | None, overrides: Sequence[str] = (), *, quick: bool = False,
                      seeds: int | None = None) -> StudyConfig:
    """The study config: file, the ``quick`` section when asked, then ``--set`` overrides (they win)."""
    cfg = load_config(StudyConfig, path, overrides)
    if quick and cfg.quick:
        merged = deep_merge(load_config(StudyConfig, path).model_dump(), {**cfg.quick, "quick": {}})
        cfg = validate(StudyConfig, apply_overrides(merged, overrides), source=str(path or "study config"))
    if seeds is not None:
        cfg = cfg.model_copy(update={"seeds": int(seeds)})
    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; arms are {', '.join(ARMS)}")
    return cfg


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


def evaluate_splits(bundle: Any, task: Any, engine: Any, splits: dict[str, Sequence[Any]], cfg: StudyConfig,
                    response_mode: str = "syn") -> dict[str, dict[str, float]]:
    """Greedy Acc@0.5 / mean IoU of one model on every split."""
    return {name: dict(evaluate_policy(bundle, task, samples, engine=engine, response_mode=response_mode,
                                       batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                                       progress=False).metrics)
            for name, samples in splits.items()}


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
        "rollout": {"response_format": "syn"},  # one warm start for every arm: all write <score>/<description>
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
        metrics = evaluate_splits(trainer.bundle, trainer.task, trainer.engine, eval_splits, cfg,
                                  response_mode=trainer.response_mode)
        steps = trainer.step
    result = {"stamp": stamp, "arm": arm, "seed": seed, "steps": steps, "train_seconds": t_train,
              "seconds": time.perf_counter() - t0, "metrics": metrics}
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
    table = results_table(summary, cfg)
    (out / "table.md").write_text(table)
    figures = write_figures(cfg, out)
    say(table)
    say("figures: " + ", ".join(str(p) for p in figures))
    return summary


# ---- reporting -------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def results_table(summary: dict[str, Any], cfg: StudyConfig) -> str:
    """Markdown in the shape of the paper's Table 1: Acc@0.5 (%) per split, mean ± std over seeds."""
    head = "| Method | " + " | ".join(SPLIT_LABELS[s] for s in SPLITS) + " |"
    lines = [head, "|" + "---|" * (len(SPLITS) + 1)]
    chance = summary["chance"]
    labels = get_registry().create("tasks", cfg.task).chance_baseline_labels
    for name in dict.fromkeys(n for s in SPLITS for n in chance[s]):  # the task's chance baselines, in its order
        cells = [f"{100 * chance[s][name]:.2f}" if name in chance[s] else "" for s in SPLITS]
        lines.append(f"| Chance: {labels.get(name, name)} | " + " | ".join(cells) + " |")
    lines.append("| SFT (warm start of every arm) | "
                 + " | ".join(f"{100 * summary['sft']['metrics'][s]['acc@0.5']:.2f}" for s in SPLITS) + " |")
    for arm in cfg.arms:
        runs = [r for r in summary["runs"] if r["arm"] == arm]
        if not runs:
            continue
        cells = []
        for s in SPLITS:
            m, sd = mean_std([100 * r["metrics"][s]["acc@0.5"] for r in runs])
            cells.append(f"{m:.2f} ± {sd:.2f}")
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cells) + " |")
    n = summary["n"]
    steps = sorted({r["steps"] for r in summary["runs"]})
    lines.append("")
    counts = {a: len(v) for a, v in summary.get("seeds", {}).items()}  # a merged study's seeds per arm
    per_arm = (f"{cfg.seeds} seed(s) per arm" if len(set(counts.values())) <= 1 else
               "seeds per arm: " + ", ".join(f"{ARM_LABELS[a]} {n}" for a, n in counts.items()))
    lines.append(f"Acc@0.5 in %, greedy decoding; {per_arm} (mean ± sample std); "
                 f"{', '.join(f'{k} n={v}' for k, v in n.items())}; RL steps per run: {steps}.")
    return "\n".join(lines) + "\n"


def _curves(run_dirs: Sequence[Path], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """x (progress), mean, min and max of ``key`` over runs, step by step."""
    series = []
    for d in run_dirs:
        recs = [r for r in read_jsonl(d / "metrics.jsonl") if r.get(key) is not None and "progress" in r]
        series.append([(float(r["progress"]), float(r[key])) for r in recs])
    series = [s for s in series if s]
    if not series:
        return [], [], [], []
    n = min(len(s) for s in series)
    xs = [series[0][i][0] for i in range(n)]
    cols = [[s[i][1] for s in series] for i in range(n)]
    return xs, [sum(c) / len(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (for readability of noisy per-step curves)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def write_figures(cfg: StudyConfig, out: Path) -> list[Path]:
    """Fig. 2, Fig. 7 and Fig. 8 analogues as PNGs in ``out``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    runs_dir = out / "runs"
    dirs = {arm: sorted(runs_dir.glob(f"{arm}-seed*")) for arm in cfg.arms}
    written: list[Path] = []
    window = max(1, int(cfg.rl.get("optim", {}).get("max_steps", 20) or 20) // 10)

    # Fig. 2: entropy and diversity against training progress
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "entropy", "Entropy H(q)"), (axes[1], "diversity/v_mean", "Diversity V(q)")):
        for arm in cfg.arms:
            xs, mean, lo, hi = _curves(dirs[arm], key)
            if xs:
                line, = ax.plot(xs, smooth(mean, window), label=ARM_LABELS[arm])
                ax.fill_between(xs, smooth(lo, window), smooth(hi, window), color=line.get_color(), alpha=0.15)
        ax.set_xlabel("training progress (epochs)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Entropy and diversity during RL (mean over seeds, band = min..max, moving average {window})")
    fig.tight_layout()
    path = out / "fig2_entropy_diversity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # Fig. 7: diversity reward with and without smoothing (the same Syn-GRPO runs, eq. 6 vs eq. 5 target)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    arm = "syn_grpo" if "syn_grpo" in cfg.arms else next((a for a in cfg.arms if a.startswith("syn")), None)
    if arm is not None:
        for key, label in (("reward/diversity_raw", "with smoothing (eq. 6)"),
                           ("reward/diversity_unsmoothed", "without smoothing (eq. 5)")):
            xs, mean, _, _ = _curves(dirs[arm], key)
            if xs:
                ax.plot(xs, mean, alpha=0.35, lw=0.8)
                ax.plot(xs, smooth(mean, window), label=label, color=ax.lines[-1].get_color())
    ax.set_xlabel("training progress (epochs)")
    ax.set_ylabel("diversity reward R_diversity")
    ax.set_title(f"{ARM_LABELS.get(arm or '', '')}: diversity reward (faint: per step)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:  # e.g. --arms grpo: no run wrote a diversity reward
        ax.text(0.5, 0.5, "no Syn-GRPO arm in this study", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    path = out / "fig7_diversity_smoothing.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    gallery = write_gallery_figure(dirs.get("syn_grpo") or [], out / "fig8_gallery.png")
    if gallery is not None:
        written.append(gallery)
    return written


def write_gallery_figure(run_dirs: Sequence[Path], path: Path) -> Path | None:
    """One source image and its synthesized versions at successive epochs (paper Fig. 8)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from PIL import Image

    for run_dir in run_dirs:
        entries = read_jsonl(run_dir / "gallery" / "gallery.jsonl")
        by_origin: dict[str, dict[int, dict[str, Any]]] = {}
        for e in entries:
            by_origin.setdefault(e["origin_id"], {}).setdefault(int(e["epoch"]), e)
        if not by_origin:
            continue
        origin, epochs = max(sorted(by_origin.items()), key=lambda kv: len(kv[1]))
        shown = [epochs[k] for k in sorted(epochs)]
        fig, axes = plt.subplots(1, len(shown) + 1, figsize=(2.6 * (len(shown) + 1), 3.0))
        gdir = run_dir / "gallery"
        axes[0].imshow(Image.open(gdir / shown[0]["original"]))
        axes[0].set_title("original", fontsize=9)
        for ax, e in zip(axes[1:], shown, strict=True):
            ax.imshow(Image.open(gdir / e["synthesized"]))
            ax.set_title(f"epoch {int(e['epoch']) + 1}", fontsize=9)
            ax.set_xlabel("\n".join(_wrap(str(e["description"]), 28)[:3]), fontsize=6)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{origin} synthesized at successive epochs ({run_dir.name})", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    return None


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return lines


#: config keys that may differ between studies merged into one table (which seeds and arms each one ran)
MERGE_FREE_KEYS = ("seed", "seeds", "arms", "warm_start", "quick")


def merge_studies(study_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """One table and one set of figures from finished studies that ran other seeds or arms of the same study.

    Seeds of one study can run as several processes or machines (``--set seed=K --seeds N`` with
    ``--set warm_start=...``); this pools their runs. Refused when the studies differ in anything but
    :data:`MERGE_FREE_KEYS` (another recipe is another study), when they started from different warm starts,
    or when two of them ran the same arm and seed. The run directories are linked, not copied, into
    ``out_dir/runs``; ``out_dir`` must be new or an earlier merge (never one of the studies).
    """
    dirs = [Path(d) for d in study_dirs]
    if len(dirs) < 2:
        raise ConfigError("--merge needs at least two study directories")
    out = Path(out_dir)
    if any(out.resolve() == d.resolve() for d in dirs):
        raise ConfigError(f"--out {out} is one of the studies to merge: give the merged table a directory of its own")
    if (out / "summary.json").is_file() and "merged_from" not in json.loads((out / "summary.json").read_text()):
        raise ConfigError(f"--out {out} holds a study of its own; merging there would overwrite it")
    summaries, configs = [], []
    for d in dirs:
        for name in ("summary.json", "study_config.json"):
            if not (d / name).is_file():
                raise ConfigError(f"{d}: no {name} (not a finished study)")
        summaries.append(json.loads((d / "summary.json").read_text()))
        # validated, so a study written before a key existed compares with that key's default
        configs.append(StudyConfig.model_validate(json.loads((d / "study_config.json").read_text()))
                       .model_dump(mode="json"))

    def recipe(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k not in MERGE_FREE_KEYS}

    first = recipe(configs[0])
    for d, c, sm in zip(dirs[1:], configs[1:], summaries[1:], strict=True):
        diff = sorted(k for k in set(recipe(c)) | set(first) if recipe(c).get(k) != first.get(k))
        if diff:
            raise ConfigError(f"{d} is another study than {dirs[0]}: its config differs in {', '.join(diff)}")
        if not _same_warm_start(summaries[0], sm) or sm["n"] != summaries[0]["n"]:
            raise ConfigError(f"{d} started from another warm start or other splits than {dirs[0]} "
                              "(point every part at one study's sft/ with --set warm_start=...)")
    runs: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], Path] = {}
    for d, sm in zip(dirs, summaries, strict=True):
        for run in sm["runs"]:
            key = (run["arm"], int(run["seed"]))
            if key in seen:
                raise ConfigError(f"arm {key[0]} seed {key[1]} ran in both {seen[key]} and {d}")
            seen[key] = d
            runs.append(run)
    if not runs:
        raise ConfigError("no finished runs in the studies to merge")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for old in (out / "runs").iterdir():  # an earlier merge's links: the figures must show this merge's runs only
        if old.is_symlink():
            old.unlink()
    for (arm, seed), d in seen.items():
        (out / "runs" / f"{arm}-seed{seed}").symlink_to((d / "runs" / f"{arm}-seed{seed}").resolve(),
                                                        target_is_directory=True)
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    seeds_of = {a: sorted(s for arm, s in seen if arm == a) for a in arms}
    cfg = StudyConfig.model_validate({**configs[0], "arms": arms, "seed": min(s for _, s in seen),
                                      "seeds": max(len(v) for v in seeds_of.values())})
    summary = {**summaries[0], "runs": runs, "seconds": sum(float(sm.get("seconds", 0.0)) for sm in summaries),
               "merged_from": [str(d) for d in dirs], "seeds": seeds_of}
    (out / "study_config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(results_table(summary, cfg))
    write_figures(cfg, out)
    return summary


def _same_warm_start(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two study summaries started from one warm start: its stamp where both can tell (a reused warm
    start carries its original's), else its scores on the shared splits."""
    ids = [_warm_start_id(s["sft"]) for s in (a, b)]
    if None not in ids:
        return ids[0] == ids[1]
    return a["sft"]["metrics"] == b["sft"]["metrics"]


def _warm_start_id(sft: dict[str, Any]) -> str | None:
    if "warm_start_stamp" in sft:
        return sft["warm_start_stamp"]
    if "reused_from" in sft:  # reused by an older syngrpo: ask the original, if it is on this disk
        original = Path(sft["reused_from"]) / "study_sft.json"
        return json.loads(original.read_text()).get("stamp") if original.is_file() else None
    return sft.get("stamp")


def data_size_table(study_dirs: Sequence[str | Path], arms: Sequence[str] | None = None
                    ) -> dict[str, dict[int, dict[str, tuple[float, float, int]]]]:
    """``{arm: {n_train: {split: (mean %, sample std %, runs)}}}`` over finished study directories (``arms``: only those).

    Each directory is one study (``summary.json``), typically the same warm start with another
    ``data.n_train``; runs of one arm and size from several directories are pooled.
    """
    pooled: dict[tuple[str, int], list[dict[str, float]]] = {}
    for d in study_dirs:
        summary = json.loads((Path(d) / "summary.json").read_text())
        n = int(summary["n"]["train"])
        for run in summary["runs"]:
            if arms is not None and run["arm"] not in arms:
                continue
            pooled.setdefault((run["arm"], n), []).append({k: v["acc@0.5"] for k, v in run["metrics"].items()})
    table: dict[str, dict[int, dict[str, tuple[float, float, int]]]] = {}
    for (arm, n), runs in sorted(pooled.items(), key=lambda kv: (list(ARMS).index(kv[0][0]), kv[0][1])):
        table.setdefault(arm, {})[n] = {split: (*mean_std([100 * r[split] for r in runs]), len(runs))
                                        for split in runs[0]}
    return table


def data_size_figure(study_dirs: Sequence[str | Path], path: str | Path,
                     splits: Sequence[str] = ("test_id", "test_ood"), arms: Sequence[str] | None = None) -> Path:
    """The Fig. 6 analogue: Acc@0.5 per arm against the train-split size (:func:`data_size_table`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = data_size_table(study_dirs, arms)
    if not table:
        raise ValueError("no finished runs in the given study directories")
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for arm, by_size in table.items():
            sizes = sorted(by_size)
            ax.errorbar(sizes, [by_size[n][split][0] for n in sizes], yerr=[by_size[n][split][1] for n in sizes],
                        marker="o", capsize=3, label=ARM_LABELS[arm])
        ax.set_xlabel("train images")
        ax.set_ylabel("Acc@0.5 (%)")
        ax.set_title(SPLIT_LABELS.get(split, split))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Accuracy against training-data size (mean ± std over seeds)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
