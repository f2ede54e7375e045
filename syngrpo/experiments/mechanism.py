"""The pre-registered mechanism experiment: can Syn-GRPO's synthesized data restore a learning signal once plain
GRPO has collapsed? (issue #23 item 4; the protocol and the predictions are in docs/study.md, written first.)

Three phases, each cached in ``--out`` so an interrupted experiment continues where it stopped:

1. **Collapse** (:func:`collapse_phase`): from the shipped warm start, plain GRPO on the toy train split, one
   rollout temperature after another (highest first), until at least ``collapse.target`` of the validation
   groups sampled at that temperature have zero-variance R_acc (G rollouts all scored alike: no GRPO gradient), or
   ``collapse.max_steps``. The first temperature that gets there is kept, with its checkpoint ("the collapsed
   checkpoint"); none: the experiment stops and says so.
2. **Difficulty** (:func:`difficulty_phase`): the validation images synthesized at each candidate level of
   ``difficulty.levels`` (the ``fixed_difficulty`` synthesizer of :mod:`.difficulty`, template descriptions);
   the level where the collapsed checkpoint's sampled R_acc is closest to ``difficulty.target`` (0.5) is kept.
3. **Arms** (:func:`run_arm`): from the collapsed checkpoint, ``steps`` RL steps of each arm of :data:`ARMS` on
   ``seeds`` seeds, every run scored greedily on a plain test split and a hard one (the test images synthesized
   at the kept level), each run's kept line (:mod:`.kept`) written as soon as it finishes.

Everything runs on one torch thread with ``sync`` synthesis through the in-process data server, so a seed gives
the same run on any machine of this kind. ``--shard i/n`` lets n processes share the arms' runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from syngrpo.config import QUICKSTART_CONFIG, TrainConfig
from syngrpo.config.io import StrictModel, load_config, load_yaml
from syngrpo.errors import ConfigError
from syngrpo.experiments.config import deep_merge, digest
from syngrpo.experiments.kept import keep_run, write_runs
from syngrpo.plugins import get_registry
from syngrpo.train.evaluate import EvalResult, evaluate_policy
from syngrpo.train.offline import run_offline
from syngrpo.train.trainer import Trainer

#: where the ``fixed_difficulty`` synthesizer is registered from (a plugin module of the experiment)
DIFFICULTY_PLUGIN = "syngrpo.experiments.difficulty"

#: arm -> what it changes, on top of the shared RL keys, from the collapsed checkpoint
ARMS: dict[str, str] = {
    "grpo": "plain GRPO goes on, on the original images",
    "offline": "plain GRPO on the originals plus one image per original synthesized before training at the kept "
               "difficulty (template descriptions)",
    "syn_grpo": "Syn-GRPO: the policy's descriptions (eq. 8) to the `procedural` synthesizer at the kept level's "
                "distractors and tones; its busy / calm words still move the difficulty",
    "syn_grpo_fixed": "Syn-GRPO with the difficulty fixed at the kept level (`fixed_difficulty`: the description "
                      "chooses colours and texture only)",
    "fresh_plain": "Syn-GRPO's loop with fresh plain backgrounds (`fixed_difficulty`, plain, muted, no "
                   "distractors, no clutter): new images, no harder",
}
ARM_LABELS = {"grpo": "GRPO (continued)", "offline": "GRPO + Offline Generation (kept level)",
              "syn_grpo": "Syn-GRPO", "syn_grpo_fixed": "Syn-GRPO, difficulty fixed",
              "fresh_plain": "Syn-GRPO loop, fresh plain backgrounds"}
SYNTH_ARMS = ("syn_grpo", "syn_grpo_fixed", "fresh_plain")
TEST_SPLITS = ("test_plain", "test_hard")


class MechanismData(StrictModel):
    seed: int = 0
    n_train: int = Field(64, ge=1)
    n_val: int = Field(64, ge=1)
    #: test originals drawn: all of them, synthesized, are the hard test split
    n_test: int = Field(500, ge=1)
    #: of which the plain test split scores the first this many (the CPU budget; ``null``: all)
    n_test_plain: int | None = Field(None, ge=1)


class CollapsePhase(StrictModel):
    #: rollout temperatures tried in this order (highest first: the paper samples at 1)
    temperatures: list[float] = Field(default_factory=lambda: [1.0, 0.7, 0.5])
    max_steps: int = Field(300, ge=1)
    check_every: int = Field(50, ge=1)
    #: share of validation groups with zero-variance R_acc that counts as collapsed
    target: float = Field(0.7, gt=0.0, le=1.0)


class DifficultyPhase(StrictModel):
    #: level name -> ``fixed_difficulty`` options (``procedural``'s distractors, clutter, tones)
    levels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: the collapsed checkpoint's sampled R_acc wanted on the synthesized images
    target: float = 0.5


class MechanismConfig(StrictModel):
    """``configs/mechanism_rec_toy.yaml``; ``train`` holds the TrainConfig keys every phase and arm shares."""

    #: the training config everything starts from (the quickstart: its warm start, task and toy world)
    base: str = str(QUICKSTART_CONFIG)
    train: dict[str, Any] = Field(default_factory=dict)
    data: MechanismData = Field(default_factory=MechanismData)
    collapse: CollapsePhase = Field(default_factory=CollapsePhase)
    difficulty: DifficultyPhase = Field(default_factory=DifficultyPhase)
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    seeds: int = Field(8, ge=1)
    seed: int = 0
    steps: int = Field(100, ge=1)
    #: rollouts per prompt when the phases measure the share of zero-variance groups on validation images
    signal_generations: int = Field(6, ge=2)
    eval_batch_size: int = Field(50, ge=1)


def load_mechanism_config(path: str | Path, overrides: Sequence[str] = ()) -> MechanismConfig:
    cfg = load_config(MechanismConfig, path, overrides)
    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"{path}: unknown arm(s) {unknown}; arms are {', '.join(ARMS)}")
    if not cfg.difficulty.levels:
        raise ConfigError(f"{path}: difficulty.levels is empty; list the candidate levels to tune on val")
    return cfg


def train_config(cfg: MechanismConfig, keys: dict[str, Any]) -> TrainConfig:
    """The base config, the shared ``train`` keys, then ``keys`` (nested), validated.

    The base's own data-server settings (a spawned server, its job options) are dropped: every synthesizing arm
    names its in-process server and the options of its level, and a job option would override them."""
    base = load_yaml(cfg.base)
    base["synthesis"] = {k: v for k, v in base.get("synthesis", {}).items()
                         if k not in ("spawn_server", "server", "job_options", "servers")}
    return TrainConfig.model_validate(deep_merge(deep_merge(base, cfg.train), keys))


def quiet(run_dir: Path) -> dict[str, Any]:
    return {"logging": {"out_dir": str(run_dir), "tensorboard": False, "progress": False, "plots": False,
                        "samples_every": 0, "save_every": 0, "gallery_per_epoch": 1000},
            "eval": {"at_start": False, "at_end": False, "every": 0}}


# ---- data --------------------------------------------------------------------------------------------------


def make_data(cfg: MechanismConfig, out: Path) -> dict[str, Path]:
    """train, val and test_plain in the base config's toy world (image i depends on (seed, split, i) only)."""
    base = train_config(cfg, {})
    toy, task = base.data.toy, get_registry().create("tasks", base.data.task)
    paths = {}
    for split, n in (("train", cfg.data.n_train), ("val", cfg.data.n_val), ("test_plain", cfg.data.n_test)):
        path = out / split / f"{split}.jsonl"
        if not path.is_file():
            samples = task.make_toy_dataset(out / split, n=n, seed=cfg.data.seed, split=split.split("_")[0],
                                            image_size=toy.image_size, **toy.options)
            task.save(samples, path)
        paths[split] = path
    return paths


def synthesized_split(cfg: MechanismConfig, source: Path, options: dict[str, Any], out: Path, *, seed: int,
                      plain: bool = False, synthesizer: str = "fixed_difficulty") -> Path:
    """``source``'s images, each synthesized once at ``options`` (template descriptions), as a split of its own
    (the synthesized samples only); cached by its inputs."""
    stamp = digest({"source": str(source), "options": options, "seed": seed, "plain": plain, "s": synthesizer})
    path = out / f"synth-{stamp}.jsonl"
    if path.is_file():
        return path
    work = out / f"work-{stamp}"
    both = offline_data(cfg, source, options, work, seed=seed, plain=plain, synthesizer=synthesizer)
    task = get_registry().create("tasks", train_config(cfg, {}).data.task)
    synth = [s for s in task.load(both) if (getattr(s, "generation", 0) or 0) >= 1 or "~offline" in s.id]
    if not synth:
        raise RuntimeError(f"offline synthesis of {source} into {work} produced no image (see {work}/offline.json)")
    task.save(synth, path)
    return path


def offline_data(cfg: MechanismConfig, source: Path, options: dict[str, Any], work: Path, *, seed: int,
                 plain: bool = False, synthesizer: str = "fixed_difficulty") -> Path:
    """Originals + one synthesized image each (``syngrpo.train.offline``), through the in-process data server."""
    done = work / "train.jsonl"
    if done.is_file():
        return done
    tc = train_config(cfg, {"seed": seed, "data": {"train": str(source), "image_root": None},
                            "synthesis": {"mode": "off", "transport": "inprocess",
                                          "transport_options": transport_options(options, work / "server",
                                                                                 plain=plain, synthesizer=synthesizer)},
                            "offline": {"describer": "template", "variants": 1}, **quiet(work)})
    report = run_offline(tc, work, say=lambda _: None)
    if report.failed or not report.done:
        raise RuntimeError(f"offline synthesis into {work}: {report.done} done, {report.failed} failed "
                           f"({'; '.join(report.errors[:3])})")
    return done


def transport_options(options: dict[str, Any], data_dir: Path, *, plain: bool = False,
                      synthesizer: str = "fixed_difficulty") -> dict[str, Any]:
    """The in-process data server's keys: the synthesizer at ``options``, the ``object`` segmenter."""
    synth_options = dict(options) if synthesizer != "fixed_difficulty" else {**options, "plain": plain}
    return {"synthesizer": synthesizer, "synthesizer_options": synth_options, "segmenter": "object", "workers": 1,
            "plugins": [DIFFICULTY_PLUGIN], "data_dir": str(data_dir)}


# ---- the learning signal -----------------------------------------------------------------------------------


def group_signal(bundle: Any, engine: Any, task: Any, samples: Sequence[Any], *, temperature: float, G: int,
                 seed: int, batch: int = 8, max_new_tokens: int = 80) -> dict[str, float]:
    """Sample ``G`` answers per image at ``temperature`` and score them with the trainer's R_acc.

    Returns the share of groups whose G R_acc values are all equal (zero variance: no GRPO gradient from R_acc),
    the mean R_acc, and the share of answers that parse. Seeded: the same model and seed give the same numbers.
    """
    import torch

    from syngrpo.data.images import load_sample_images
    from syngrpo.models.policy import encode_prompts
    from syngrpo.perception.response import parse_response
    from syngrpo.train.evaluate import build_prompts

    accuracy = get_registry().create("rewards", "accuracy")
    flat, zero, formed, groups = [], 0, 0, 0
    for start in range(0, len(samples), batch):
        chunk = list(samples[start:start + batch])
        prompts = encode_prompts(bundle, [load_sample_images(s) for s in chunk], build_prompts(task, chunk, "syn"),
                                 box_images=[s.box_image for s in chunk])
        with torch.no_grad():
            rollout = engine.generate(bundle, prompts, num_generations=G, temperature=temperature, top_p=1.0,
                                      max_new_tokens=max_new_tokens, generator_seed=seed + start)
        parsed = [parse_response(t, "syn") for t in rollout.texts]
        rows = [chunk[int(i)] for i in rollout.prompt_index]
        acc = [float(a) for a in accuracy(parsed, rows, task=task, frames=list(rollout.batch.frames))]
        for b in range(len(chunk)):
            g = acc[b * G:(b + 1) * G]
            zero += max(g) - min(g) < 1e-9
            groups += 1
        flat += acc
        formed += sum(p.well_formed for p in parsed)
    return {"zero_variance": zero / groups, "r_acc": sum(flat) / len(flat), "format": formed / len(flat),
            "groups": groups}


# ---- phases ------------------------------------------------------------------------------------------------


def _cached(path: Path, stamp: str) -> dict[str, Any] | None:
    if path.is_file():
        got = json.loads(path.read_text())
        if got.get("stamp") == stamp:
            return got
    return None


def collapse_run(cfg: MechanismConfig, out: Path, data: dict[str, Path], T: float, say: Callable[[str], None]
                 ) -> dict[str, Any]:
    """Plain GRPO from the warm start at rollout temperature ``T``, checked on val every ``check_every`` steps,
    until the share of zero-variance groups reaches the target (then checkpointed) or ``max_steps``."""
    c = cfg.collapse
    run_dir = out / "collapse" / f"T{T:g}"
    stamp = digest({"collapse": c.model_dump(), "T": T, "train": cfg.train, "base": cfg.base,
                    "data": cfg.data.model_dump(), "G": cfg.signal_generations, "seed": cfg.seed})
    cached = _cached(run_dir / "collapse.json", stamp)
    if cached is not None:
        return cached
    task = get_registry().create("tasks", train_config(cfg, {}).data.task)
    val = task.load(data["val"])
    keys = {"seed": cfg.seed, "data": {"train": str(data["train"]), "eval": str(data["val"])},
            "rollout": {"temperature": T, "response_format": "syn"}, "synthesis": {"mode": "off"},
            "optim": {"max_steps": c.max_steps}, **quiet(run_dir)}
    checks, reached = [], None
    t0 = time.perf_counter()
    with Trainer(train_config(cfg, keys), run_dir) as trainer:
        trainer.setup()
        for step in range(0, c.max_steps + 1, c.check_every):
            if step:
                trainer.train(until=step)
            with trainer.sampling():
                sig = group_signal(trainer.bundle, trainer.engine, task, val, temperature=T,
                                   G=cfg.signal_generations, seed=1000 + step)
            checks.append({"step": step, **sig, "seconds": round(time.perf_counter() - t0, 1)})
            say(f"collapse T={T:g} step {step}: {100 * sig['zero_variance']:.0f} % of val groups without "
                f"R_acc variance, R_acc {sig['r_acc']:.3f}, format {sig['format']:.2f}")
            if sig["zero_variance"] >= c.target:
                reached = {"temperature": T, "step": step, "checkpoint": str(trainer.save()), **sig}
                break
    result = {"stamp": stamp, "temperature": T, "checks": checks, "reached": reached}
    (run_dir / "collapse.json").write_text(json.dumps(result, indent=1))
    return result


def collapse_phase(cfg: MechanismConfig, out: Path, data: dict[str, Path], say: Callable[[str], None], *,
                   shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Phase 1 (module doc): every candidate temperature, shared among the shards, then the highest that collapsed.

    Run side by side rather than one after the other (the CPU budget, docs/study.md); the rule is the same as
    trying them highest first and keeping the first that collapses."""
    index, count = shard
    temps = cfg.collapse.temperatures
    for k, T in enumerate(temps):
        if k % count == index:
            collapse_run(cfg, out, data, T, say)
    runs = [_wait_for(out / "collapse" / f"T{T:g}" / "collapse.json", say) for T in temps]
    reached = [r["reached"] for r in runs if r["reached"] is not None]
    chosen = max(reached, key=lambda r: r["temperature"]) if reached else None
    result = {"tried": [{k: v for k, v in r.items() if k != "stamp"} for r in runs], "chosen": chosen,
              "target": cfg.collapse.target}
    if index == 0:
        (out / "phase1_collapse.json").write_text(json.dumps(result, indent=1))
    return result


def difficulty_phase(cfg: MechanismConfig, out: Path, data: dict[str, Path], collapsed: dict[str, Any],
                     say: Callable[[str], None]) -> dict[str, Any]:
    """Phase 2: the level whose synthesized val images the collapsed checkpoint scores closest to the target."""
    from syngrpo.models.policy import load_policy
    from syngrpo.rundir.checkpoint import model_dir

    d = cfg.difficulty
    stamp = digest({"difficulty": d.model_dump(), "collapsed": collapsed, "G": cfg.signal_generations})
    result_path = out / "phase2_difficulty.json"
    cached = _cached(result_path, stamp)
    if cached is not None:
        return cached
    registry = get_registry()
    task = registry.create("tasks", train_config(cfg, {}).data.task)
    bundle = load_policy(str(model_dir(collapsed["checkpoint"])), device="cpu", dtype="float32")
    engine = registry.create("rollout_engines", "hf", bundle=bundle)
    levels = {}
    for name, options in d.levels.items():
        split = synthesized_split(cfg, data["val"], options, out / "synth" / "val", seed=cfg.data.seed)
        sig = group_signal(bundle, engine, task, task.load(split), temperature=collapsed["temperature"],
                           G=cfg.signal_generations, seed=2000)
        levels[name] = {"options": options, "split": str(split), **sig}
        say(f"difficulty {name} {options}: R_acc {sig['r_acc']:.3f}, "
            f"{100 * sig['zero_variance']:.0f} % of groups without variance")
    kept = min(levels, key=lambda n: (abs(levels[n]["r_acc"] - d.target), list(levels).index(n)))
    result = {"stamp": stamp, "levels": levels, "chosen": kept, "target": d.target}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def arm_keys(cfg: MechanismConfig, arm: str, seed: int, collapsed: dict[str, Any], level: dict[str, Any],
             data: dict[str, Path], run_dir: Path, train_file: Path | None = None) -> dict[str, Any]:
    """The TrainConfig keys of one (arm, seed) run from the collapsed checkpoint."""
    from syngrpo.rundir.checkpoint import model_dir

    keys: dict[str, Any] = {
        "seed": seed, "model": {"policy": str(model_dir(collapsed["checkpoint"]))},
        "data": {"train": str(train_file or data["train"]), "eval": str(data["val"]), "image_root": None},
        "rollout": {"temperature": collapsed["temperature"], "response_format": "syn"},
        "optim": {"max_steps": cfg.steps}, **quiet(run_dir)}
    opts = dict(level["options"])
    if arm in ("grpo", "offline"):
        keys["synthesis"] = {"mode": "off"}
    else:
        if arm == "syn_grpo":  # the description keeps moving the clutter (and busy words add a distractor)
            transport = transport_options({k: v for k, v in opts.items() if k != "clutter"}, run_dir / "server",
                                          synthesizer="procedural")
        elif arm == "syn_grpo_fixed":
            transport = transport_options(opts, run_dir / "server")
        else:  # fresh_plain
            transport = transport_options({"tones": "muted", "distractors": 0, "clutter": 0}, run_dir / "server",
                                          plain=True)
        keys["synthesis"] = {"mode": "sync", "transport": "inprocess", "transport_options": transport,
                             "source": "original", "description_selection": "diversity"}
        keys["plugins"] = [DIFFICULTY_PLUGIN]  # the trainer's pre-flight checks the synthesizer's name too
    return keys


def run_arm(cfg: MechanismConfig, out: Path, arm: str, seed: int, collapsed: dict[str, Any],
            level: dict[str, Any], data: dict[str, Path], tests: dict[str, list[Any]]) -> dict[str, Any]:
    """One (arm, seed) run and its greedy evaluation on the test splits; reused when already done."""
    run_dir = out / "runs" / f"{arm}-seed{seed}"
    result_path = run_dir / "result.json"
    stamp = digest({"keys": arm_keys(cfg, arm, seed, collapsed, level, data, run_dir), "train": cfg.train,
                    "base": cfg.base, "tests": {k: len(v) for k, v in tests.items()}})
    cached = _cached(result_path, stamp)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    train_file = None
    if arm == "offline":
        train_file = offline_data(cfg, data["train"], level["options"], run_dir / "offline", seed=seed)
    tc = train_config(cfg, arm_keys(cfg, arm, seed, collapsed, level, data, run_dir, train_file))
    with Trainer(tc, run_dir) as trainer:
        trainer.train()
        t_train = time.perf_counter() - t0
        with trainer.sampling():
            evals: dict[str, EvalResult] = {
                split: evaluate_policy(trainer.bundle, trainer.task, samples, engine=trainer.engine,
                                       response_mode="syn", batch_size=cfg.eval_batch_size, max_new_tokens=80)
                for split, samples in tests.items()}
    kept = keep_run(run_dir, arm=arm, seed=seed, evals=evals, extra={"train_seconds": round(t_train, 1)})
    result = {"stamp": stamp, "arm": arm, "seed": seed, "seconds": time.perf_counter() - t0, "kept": kept}
    result_path.write_text(json.dumps(result))
    return result


def evaluate_start(cfg: MechanismConfig, out: Path, collapsed: dict[str, Any], tests: dict[str, list[Any]]
                   ) -> dict[str, Any]:
    """The collapsed checkpoint and the warm start it came from, scored on the test splits (the "start" rows)."""
    from syngrpo.config import SHIPPED_POLICIES
    from syngrpo.models.policy import load_policy
    from syngrpo.rundir.checkpoint import model_dir

    path = out / "start_eval.json"
    stamp = digest({"collapsed": collapsed, "tests": {k: len(v) for k, v in tests.items()}})
    cached = _cached(path, stamp)
    if cached is not None:
        return cached
    registry = get_registry()
    task = registry.create("tasks", train_config(cfg, {}).data.task)
    policy = train_config(cfg, {}).model.policy
    rows = {}
    for name, where in (("warm_start", str(SHIPPED_POLICIES.get(policy, policy))),
                        ("collapsed", str(model_dir(collapsed["checkpoint"])))):
        bundle = load_policy(where, device="cpu", dtype="float32")
        engine = registry.create("rollout_engines", "hf", bundle=bundle)
        evals = {split: evaluate_policy(bundle, task, samples, engine=engine, response_mode="syn",
                                        batch_size=cfg.eval_batch_size, max_new_tokens=80)
                 for split, samples in tests.items()}
        rows[name] = keep_run(out, arm=name, seed=-1, evals=evals) | {"curves": {}}
    result = {"stamp": stamp, **rows}
    path.write_text(json.dumps(result))
    return result


def schedule(cfg: MechanismConfig, shard: tuple[int, int] = (0, 1)) -> list[tuple[int, str, int]]:
    """Phase 3's runs as ``(position, arm, seed)``, **seed-major** (every arm of the first seed, then of the next),
    this shard's share: every n-th run from the i-th. Run side by side, the shards finish the seeds in order, so an
    experiment stopped early leaves whole seeds (all arms, the paired comparisons' unit) and at most n runs of the
    next seed behind them (docs/study.md, amendment 3)."""
    index, count = shard
    runs = [(arm, seed) for seed in range(cfg.seed, cfg.seed + cfg.seeds) for arm in cfg.arms]
    return [(k, arm, seed) for k, (arm, seed) in enumerate(runs) if k % count == index]


def run_mechanism(cfg: MechanismConfig, out_dir: str | Path, *, shard: tuple[int, int] = (0, 1),
                  say: Callable[[str], None] = print) -> dict[str, Any]:
    """The three phases (module doc); with ``shard=(i, n)`` this process runs every n-th arm run from the i-th.

    Phase 1's temperatures are shared among the shards; phase 2 runs in shard 0 only while the others wait. The kept data
    (``kept/runs.jsonl``, ``kept/experiment.json``) is rewritten after every run from every finished run.
    """
    import torch

    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mechanism_config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
    data = make_data(cfg, out / "data")
    index, count = shard
    collapse = collapse_phase(cfg, out, data, say, shard=shard)
    if collapse["chosen"] is None:
        say(f"no temperature of {cfg.collapse.temperatures} reached {100 * cfg.collapse.target:.0f} % "
            f"zero-variance groups on val within {cfg.collapse.max_steps} steps: stopping (see phase1_collapse.json)")
        write_experiment(cfg, out, collapse, None, None)
        return {"collapse": collapse}
    difficulty = difficulty_phase(cfg, out, data, collapse["chosen"], say) if index == 0 else \
        _wait_for(out / "phase2_difficulty.json", say)
    level = difficulty["levels"][difficulty["chosen"]]
    task = get_registry().create("tasks", train_config(cfg, {}).data.task)
    hard = synthesized_split(cfg, data["test_plain"], level["options"], out / "synth" / "test", seed=cfg.data.seed)
    tests = {"test_plain": task.load(data["test_plain"])[:cfg.data.n_test_plain], "test_hard": task.load(hard)}
    start = evaluate_start(cfg, out, collapse["chosen"], tests) if index == 0 else None
    todo = schedule(cfg)
    for k, arm, seed in schedule(cfg, shard):
        t0 = time.perf_counter()
        run_arm(cfg, out, arm, seed, collapse["chosen"], level, data, tests)
        say(f"{arm} seed {seed}: done in {time.perf_counter() - t0:.0f} s ({k + 1}/{len(todo)})")
        write_experiment(cfg, out, collapse, difficulty, start)
    write_experiment(cfg, out, collapse, difficulty, start)
    return {"collapse": collapse, "difficulty": difficulty}


def write_experiment(cfg: MechanismConfig, out: Path, collapse: dict[str, Any], difficulty: dict[str, Any] | None,
                     start: dict[str, Any] | None) -> None:
    """``kept/experiment.json`` (config, phases, start rows) and ``kept/runs.jsonl`` (every finished run)."""
    if start is None and (out / "start_eval.json").is_file():
        start = json.loads((out / "start_eval.json").read_text())
    runs = [json.loads(p.read_text())["kept"] for p in sorted((out / "runs").glob("*/result.json"))]
    kept = out / "kept"
    kept.mkdir(exist_ok=True)
    strip = {"stamp", "split"}
    phases = {"collapse": dict(collapse),
              "difficulty": None if difficulty is None else {
                  "chosen": difficulty["chosen"], "target": difficulty["target"],
                  "levels": {n: {k: v for k, v in lv.items() if k not in strip}
                             for n, lv in difficulty["levels"].items()}}}
    doc = {"experiment": "mechanism", "config": cfg.model_dump(mode="json"), "phases": phases,
           "start": None if start is None else {k: v for k, v in start.items() if k != "stamp"}}
    (kept / "experiment.json").write_text(json.dumps(_portable(doc), indent=1, sort_keys=True))
    write_runs(runs, kept / "runs.jsonl")


def _portable(value: Any) -> Any:
    """``value`` without this machine's paths (checkpoints, split files): kept data travels."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items() if k not in ("checkpoint", "split", "stamp")}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return value


def _wait_for(path: Path, say: Callable[[str], None], poll: float = 30.0) -> dict[str, Any]:
    said = False
    while not path.is_file():
        if not said:
            say(f"waiting for {path} (shard 0 runs the phases)")
            said = True
        time.sleep(poll)
    return json.loads(path.read_text())
