"""The CPU study (syngrpo study): splits, arm configs, the Table 1 / figure writers, and --quick end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from syngrpo.errors import ConfigError
from syngrpo.experiments.study import (
    ARM_LABELS,
    ARMS,
    SPLIT_LABELS,
    SPLITS,
    StudyConfig,
    arm_config,
    deep_merge,
    load_study_config,
    make_splits,
    mean_std,
    results_table,
    write_figures,
)

REPO = Path(__file__).resolve().parents[1]
STUDY_CONFIG = REPO / "configs" / "study_rec_toy.yaml"


def small_config(**over) -> StudyConfig:
    base = {
        "seeds": 2,
        "data": {"image_size": 84, "n_train": 6, "n_val": 3, "n_test": 6,
                 "options": {"grid": 3, "position_code": True, "n_shapes": [1, 2]}},
        "rl": {"optim": {"max_steps": 4}},
    }
    return StudyConfig.model_validate(deep_merge(base, over))


def test_deep_merge_keeps_siblings_and_replaces_leaves():
    base = {"a": {"x": 1, "y": 2}, "b": [1]}
    assert deep_merge(base, {"a": {"y": 3}, "b": [2]}) == {"a": {"x": 1, "y": 3}, "b": [2]}
    assert base == {"a": {"x": 1, "y": 2}, "b": [1]}  # the input is not changed


def test_mean_std_uses_sample_deviation():
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, 2 ** 0.5))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_shipped_study_config_loads_and_quick_shrinks_it():
    full = load_study_config(STUDY_CONFIG)
    quick = load_study_config(STUDY_CONFIG, quick=True)
    assert full.arms == list(ARMS)
    assert quick.data.n_train < full.data.n_train and quick.seeds == 1
    assert quick.rl["optim"]["max_steps"] < full.rl["optim"]["max_steps"]
    assert quick.rl["synthesis"] == full.rl["synthesis"]  # quick merges into the sections, it does not drop them


def test_unknown_arm_is_a_config_error():
    from syngrpo.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown arm"):
        load_study_config(STUDY_CONFIG, ["arms=[grpo,ppo]"])


def test_out_of_domain_split_holds_the_in_domain_scenes_on_unseen_backgrounds(tmp_path):
    cfg = small_config()
    paths = make_splits(cfg, tmp_path)
    from tasks_rec.task import RecTask

    task = RecTask()
    test_id, test_ood, train = task.load(paths["test_id"]), task.load(paths["test_ood"]), task.load(paths["train"])
    assert [s.problem for s in test_id] == [s.problem for s in test_ood]
    assert [s.solution for s in test_id] == [s.solution for s in test_ood]
    assert {s.meta["style"] for s in test_ood} == set(cfg.data.ood_styles)
    assert {s.meta["style"] for s in train} == {"plain"}
    assert not {s.image for s in train} & {s.image for s in test_id}


def test_chance_of_a_random_object_is_one_over_the_object_count(tmp_path):
    from tasks_rec.chance import chance_levels
    from tasks_rec.toy import make_rec_toy

    samples = make_rec_toy(tmp_path, n=30, seed=1, image_size=84, grid=3, n_shapes=(1, 2))
    expected = sum(1 / len(s.meta["objects"]) for s in samples) / len(samples)
    levels = chance_levels(samples, samples)
    assert levels["random_object"] == pytest.approx(expected)
    assert 0.0 < levels["constant_box"] < 1.0


def test_arms_differ_only_in_what_the_ablation_names(tmp_path):
    cfg = small_config()
    data = {"train": tmp_path / "train.jsonl", "val": tmp_path / "val.jsonl"}
    made = {arm: arm_config(cfg, arm, 0, tmp_path / "sft", data, tmp_path / arm) for arm in ARMS}
    assert made["grpo"].synthesis.mode == "off" and made["grpo_entropy"].synthesis.mode == "off"
    # plain GRPO rewards neither <score> nor <description>, though it writes them (one warm start for all arms)
    assert made["grpo"].diversity_weight == 0.0 and made["grpo_entropy"].diversity_weight == 0.0
    assert made["grpo_entropy"].algorithm.policy_loss.name == "entropy_loss"
    assert made["syn_grpo"].synthesis.mode == "sync" and made["syn_grpo"].diversity_weight == 1.0
    assert made["syn_grpo"].synthesis.description_selection == "diversity"
    assert made["syn_grpo_no_div"].synthesis.description_selection == "random"
    assert made["syn_grpo_no_div"].diversity_weight == 0.0
    assert made["syn_grpo"].synthesis.transport == "inprocess"  # deterministic: no HTTP, sync waits
    # the offline arm: plain GRPO, its data written first by the template describer through the in-process server
    assert made["grpo_offline"].synthesis.mode == "off" and made["grpo_offline"].synthesis.transport == "inprocess"
    assert made["grpo_offline"].offline.describer == "template"
    assert made["grpo_entropy_adv"].algorithm.policy_loss.name == "entropy_advantage"
    for c in made.values():  # the same warm start, format and number of policy updates everywhere
        assert c.model.policy == str(tmp_path / "sft") and c.response_mode == "syn" and c.optim.max_steps == 4
        assert not c.sft.enabled


def _fake_run_dir(root: Path, arm: str, seed: int, steps: int = 5) -> None:
    d = root / "runs" / f"{arm}-seed{seed}"
    d.mkdir(parents=True)
    with (d / "metrics.jsonl").open("w") as f:
        for step in range(1, steps + 1):
            rec = {"step": step, "progress": step / steps, "entropy": 1.0 / step, "diversity/v_mean": 0.5 / step}
            if arm.startswith("syn"):
                rec.update({"reward/diversity_raw": 0.6, "reward/diversity_unsmoothed": 0.4 + 0.1 * (step % 2)})
            f.write(json.dumps(rec) + "\n")


def test_table_has_every_arm_and_split_with_mean_and_std(tmp_path):
    cfg = small_config()
    metrics = lambda a: {s: {"acc@0.5": a, "mean_iou": a} for s in SPLITS}  # noqa: E731
    summary = {
        "chance": {s: {"random_object": 0.5, "constant_box": 0.1} for s in SPLITS},
        "sft": {"metrics": metrics(0.25)},
        "runs": [{"arm": arm, "seed": seed, "steps": 4, "metrics": metrics(0.5 + 0.1 * seed)}
                 for arm in ARMS for seed in (0, 1)],
        "n": {"val": 3, "test_id": 6, "test_ood": 6, "train": 6},
    }
    table = results_table(summary, cfg)
    for label in list(ARM_LABELS.values()) + list(SPLIT_LABELS.values()):
        assert label in table
    assert "55.00 ± 7.07" in table  # mean of 50 and 60, sample std of the two
    assert "| SFT (warm start of every arm) | 25.00 | 25.00 | 25.00 |" in table


def test_figures_are_written_from_run_metrics(tmp_path):
    cfg = small_config()
    for arm in ARMS:
        for seed in (0, 1):
            _fake_run_dir(tmp_path, arm, seed)
    written = write_figures(cfg, tmp_path)
    names = {p.name for p in written}
    assert {"fig2_entropy_diversity.png", "fig7_diversity_smoothing.png"} <= names
    for p in written:
        assert p.stat().st_size > 5000


def test_gallery_figure_shows_one_source_across_epochs(tmp_path):
    from PIL import Image

    from syngrpo.experiments.study import write_gallery_figure

    gdir = tmp_path / "runs" / "syn_grpo-seed0" / "gallery"
    gdir.mkdir(parents=True)
    entries = []
    for epoch, origin in ((0, "a"), (1, "a"), (2, "a"), (0, "b")):
        Image.new("RGB", (32, 32), (200, 200, 200)).save(gdir / f"{origin}{epoch}-o.jpg")
        Image.new("RGB", (32, 32), (40 * epoch, 90, 90)).save(gdir / f"{origin}{epoch}-s.jpg")
        entries.append({"step": epoch + 1, "epoch": epoch, "origin_id": origin, "original": f"{origin}{epoch}-o.jpg",
                        "synthesized": f"{origin}{epoch}-s.jpg", "description": f"stripes {epoch}", "generation": 1})
    (gdir / "gallery.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    path = write_gallery_figure([gdir.parent], tmp_path / "fig8.png")
    assert path is not None and path.stat().st_size > 3000
    assert write_gallery_figure([tmp_path / "nothing"], tmp_path / "none.png") is None


@pytest.mark.slow
def test_quick_study_runs_end_to_end_and_writes_table_and_figures(tmp_path):
    """`syngrpo study --quick` on the shipped config: every arm trains, is scored on every split, and reported."""
    from syngrpo.cli import main

    out = tmp_path / "study"
    assert main(["study", "-c", str(STUDY_CONFIG), "--quick", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    for arm in ARMS:
        assert ARM_LABELS[arm] in table
    summary = json.loads((out / "summary.json").read_text())
    assert {r["arm"] for r in summary["runs"]} == set(ARMS)
    assert len({r["steps"] for r in summary["runs"]}) == 1  # the same number of policy updates per arm
    assert (out / "fig2_entropy_diversity.png").is_file() and (out / "fig7_diversity_smoothing.png").is_file()
    # the same command in a fresh directory gives the same table and the same training curves (reproducible)
    again = tmp_path / "again"
    assert main(["study", "-c", str(STUDY_CONFIG), "--quick", "--out", str(again)]) == 0
    assert (again / "table.md").read_text() == table
    def curve(root: Path, arm: str) -> list[tuple]:
        lines = (root / "runs" / f"{arm}-seed0" / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["entropy"], r["reward/total"]) for r in map(json.loads, lines)]

    for arm in ARMS:
        assert curve(out, arm) == curve(again, arm)
    # the kept data docs/study.md is regenerated from: one line per run, the same from the same command
    kept = (out / "kept" / "runs.jsonl").read_text()
    assert len(kept.splitlines()) == len(ARMS) and kept == (again / "kept" / "runs.jsonl").read_text()


def test_a_warm_start_that_is_not_a_finished_one_is_refused_with_the_fix(tmp_path):
    from syngrpo.experiments.study import warm_start

    cfg = small_config(warm_start=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="point it at a study's sft/ directory"):
        warm_start(cfg, tmp_path / "out", {}, {})


@pytest.mark.slow
def test_the_data_size_ablation_reuses_one_warm_start(tmp_path):
    """`--set warm_start=...` with another train size: no new SFT, the same weights, the arms train on the new split."""
    from syngrpo.cli import main

    first = tmp_path / "first"
    assert main(["study", "-c", str(STUDY_CONFIG), "--quick", "--out", str(first), "--arms", "grpo"]) == 0
    again = tmp_path / "n8"
    assert main(["study", "-c", str(STUDY_CONFIG), "--quick", "--out", str(again), "--arms", "grpo",
                 "--set", f"warm_start={first / 'sft'}", "--set", "data.n_train=8"]) == 0
    summary = json.loads((again / "summary.json").read_text())
    assert summary["n"]["train"] == 8 and summary["sft"]["reused_from"] == str(first / "sft")
    assert not (again / "sft").exists() and not (again / "policy").exists()  # nothing was built or trained
    run_cfg = (again / "runs" / "grpo-seed0" / "config.yaml").read_text()
    assert str(first / "sft") in run_cfg and "n8/data/train" in run_cfg


def test_data_size_figure_pools_runs_by_arm_and_train_size(tmp_path):
    from syngrpo.experiments.study import data_size_figure, data_size_table

    def fake_study(name: str, n_train: int, accs: dict[str, list[float]]) -> Path:
        d = tmp_path / name
        d.mkdir()
        runs = [{"arm": arm, "seed": i, "metrics": {s: {"acc@0.5": a} for s in SPLITS}}
                for arm, values in accs.items() for i, a in enumerate(values)]
        (d / "summary.json").write_text(json.dumps({"n": {"train": n_train}, "runs": runs}))
        return d

    dirs = [fake_study("n100", 100, {"grpo": [0.5, 0.6], "syn_grpo": [0.4]}),
            fake_study("n200", 200, {"grpo": [0.7], "syn_grpo": [0.8, 0.6]}),
            fake_study("n200b", 200, {"grpo": [0.9]})]  # a second directory of the same size is pooled
    table = data_size_table(dirs)
    assert list(table) == ["grpo", "syn_grpo"] and sorted(table["grpo"]) == [100, 200]
    mean, std, runs = table["grpo"][200]["test_ood"]
    assert runs == 2 and mean == pytest.approx(80.0) and std == pytest.approx(14.1421356)  # pooled over n200, n200b
    assert table["grpo"][100]["val"] == (pytest.approx(55.0), pytest.approx(7.0710678), 2)
    assert table["syn_grpo"][100]["test_id"] == (pytest.approx(40.0), 0.0, 1)
    assert list(data_size_table(dirs, arms=["syn_grpo"])) == ["syn_grpo"]
    path = data_size_figure(dirs, tmp_path / "fig6.png")
    assert path.stat().st_size > 3000
    with pytest.raises(ValueError, match="no finished runs"):
        data_size_figure([fake_study("empty", 100, {})], tmp_path / "none.png")


def _finished_study(root: Path, name: str, accs: dict[str, dict[int, float]], *, sft: float = 0.5,
                    lr: float = 1e-4) -> Path:
    """A finished study on disk as run_study leaves it (config, summary, one metrics file per run)."""
    from syngrpo.experiments.study import StudyConfig

    d = root / name
    runs = []
    for arm, by_seed in accs.items():
        for seed, acc in by_seed.items():
            run_dir = d / "runs" / f"{arm}-seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.jsonl").write_text(
                "\n".join(json.dumps({"step": i, "progress": i / 4, "entropy": 0.1 * i, "diversity/v_mean": acc})
                          for i in range(1, 5)) + "\n")
            runs.append({"arm": arm, "seed": seed, "steps": 4, "train_seconds": 1.0,
                         "metrics": {s: {"acc@0.5": acc} for s in SPLITS}})
    cfg = StudyConfig.model_validate({"seed": min(min(v) for v in accs.values()), "seeds": 1, "arms": list(accs),
                                      "rl": {"optim": {"lr": lr}}})
    (d / "study_config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    chance = {s: {"random_object": 0.1, "constant_box": 0.05} for s in SPLITS}
    (d / "summary.json").write_text(json.dumps({
        "sft": {"metrics": {s: {"acc@0.5": sft} for s in SPLITS}}, "chance": chance, "runs": runs, "seconds": 10.0,
        "n": {s: 10 for s in SPLITS} | {"train": 30}}))
    return d


def test_merge_pools_the_seeds_that_ran_apart_into_one_table(tmp_path):
    from syngrpo.cli import main

    a = _finished_study(tmp_path, "a", {"grpo": {0: 0.5, 1: 0.6}, "syn_grpo": {0: 0.7, 1: 0.8}})
    b = _finished_study(tmp_path, "b", {"grpo": {2: 0.7}, "syn_grpo": {2: 0.9}})
    out = tmp_path / "merged"
    assert main(["study", "--merge", str(a), str(b), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| GRPO | 60.00 ± 10.00 | 60.00 ± 10.00 | 60.00 ± 10.00 |" in table  # 50, 60, 70 over three seeds
    assert "| Syn-GRPO | 80.00 ± 10.00 |" in table and "3 seed(s) per arm" in table
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 6 and summary["merged_from"] == [str(a), str(b)]
    assert (out / "runs" / "grpo-seed2").resolve() == (b / "runs" / "grpo-seed2").resolve()
    assert (out / "fig2_entropy_diversity.png").stat().st_size > 3000


def test_merge_refuses_another_recipe_another_warm_start_and_a_seed_run_twice(tmp_path):
    from syngrpo.experiments.study import merge_studies

    a = _finished_study(tmp_path, "a", {"grpo": {0: 0.5}})
    with pytest.raises(ValueError, match="differs in rl"):
        merge_studies([a, _finished_study(tmp_path, "lr", {"grpo": {1: 0.5}}, lr=3e-4)], tmp_path / "m1")
    with pytest.raises(ValueError, match="another warm start"):
        merge_studies([a, _finished_study(tmp_path, "sft", {"grpo": {1: 0.5}}, sft=0.6)], tmp_path / "m2")
    with pytest.raises(ValueError, match="arm grpo seed 0 ran in both"):
        merge_studies([a, _finished_study(tmp_path, "again", {"grpo": {0: 0.4}})], tmp_path / "m3")
    with pytest.raises(ConfigError, match="not a finished study"):
        merge_studies([a, tmp_path / "nothing"], tmp_path / "m4")
    b = _finished_study(tmp_path, "b", {"grpo": {1: 0.6}})
    with pytest.raises(ConfigError, match="is one of the studies"):
        merge_studies([a, b], a)
    with pytest.raises(ConfigError, match="holds a study of its own"):
        merge_studies([a, b], _finished_study(tmp_path, "real", {"grpo": {7: 0.1}}))


def test_a_second_merge_into_the_same_directory_shows_only_its_own_runs(tmp_path, capsys):
    from syngrpo.cli import main
    from syngrpo.experiments.study import merge_studies

    a = _finished_study(tmp_path, "a", {"grpo": {0: 0.5}})
    b = _finished_study(tmp_path, "b", {"grpo": {1: 0.7}})
    c = _finished_study(tmp_path, "c", {"syn_grpo": {1: 0.9}})
    out = tmp_path / "merged"
    merge_studies([a, b], out)
    summary = merge_studies([a, c], out)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["grpo-seed0", "syn_grpo-seed1"]
    assert summary["seeds"] == {"grpo": [0], "syn_grpo": [1]}
    assert main(["study", "--merge", str(a), str(b), "--seeds", "3", "--out", str(out)]) == 2
    assert "takes only --out" in capsys.readouterr().err


def test_merge_knows_a_reused_warm_start_by_its_original_stamp_not_its_scores(tmp_path):
    from syngrpo.experiments.study import merge_studies

    a = _finished_study(tmp_path, "a", {"grpo": {0: 0.5}})
    b = _finished_study(tmp_path, "b", {"grpo": {1: 0.7}})
    for d, stamp in ((a, "w1"), (b, "w1")):
        summary = json.loads((d / "summary.json").read_text())
        summary["sft"]["warm_start_stamp"] = stamp
        (d / "summary.json").write_text(json.dumps(summary))
    merge_studies([a, b], tmp_path / "same")
    summary = json.loads((b / "summary.json").read_text())
    summary["sft"]["warm_start_stamp"] = "w2"  # same scores, another warm start
    (b / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="another warm start"):
        merge_studies([a, b], tmp_path / "other")


# ---- evidence: statistics, kept data, generated docs (issue #23) ----------------------------------------------


def test_t_quantile_matches_published_tables():
    """Student t quantiles (no scipy here): the 97.5 % points of any printed t table."""
    from syngrpo.experiments.stats import t_quantile

    for df, value in ((1, 12.706), (4, 2.776), (7, 2.365), (9, 2.262), (30, 2.042)):
        assert t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)


def test_paired_t_reproduces_r_on_students_sleep_data():
    """R's ``t.test(extra[11:20], extra[1:10], paired = TRUE)`` on the ``sleep`` data set (Cushny & Peebles, the
    example of Student 1908): mean difference 1.58, 95 % CI 0.7001142 .. 2.4598858, p = 0.002833."""
    from syngrpo.experiments.stats import paired_t

    g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    got = paired_t(g1, g2)
    assert got.mean == pytest.approx(1.58)
    assert (got.lo, got.hi) == (pytest.approx(0.7001142, abs=1e-6), pytest.approx(2.4598858, abs=1e-6))
    assert got.p == pytest.approx(0.002833, abs=5e-6)


def test_paired_bootstrap_counts_the_test_set_not_only_the_seeds():
    """Two seeds whose per-seed accuracies differ by exactly the same amount: resampling seeds alone would call the
    difference exact (a zero-width interval); 200 images leave real uncertainty, which the interval must show."""
    from syngrpo.experiments.stats import paired_bootstrap

    rng = np.random.default_rng(0)
    a = np.repeat(rng.integers(0, 2, size=(1, 200)).astype(float), 2, axis=0)
    b = a.copy()
    flip = rng.choice(200, size=30, replace=False)
    b[:, flip] = 1 - b[:, flip]  # the same 30 images change in both seeds: per-seed differences are equal
    per_seed = (b - a).mean(axis=1)
    assert per_seed[0] == per_seed[1]
    got = paired_bootstrap(a, b, n_boot=2000)
    assert got.hi - got.lo > 0.05 and got.lo <= got.mean <= got.hi
    seeds_only = paired_bootstrap(a, b, n_boot=2000, images=False)
    assert seeds_only.hi - seeds_only.lo == pytest.approx(0.0)
    # a difference on every image of every seed is certain
    assert paired_bootstrap(np.zeros((3, 50)), np.ones((3, 50)), n_boot=500).lo == 1.0


def test_kept_hits_round_trip_and_agree_with_the_tasks_acc_at_0_5(tmp_path):
    """The per-image hits the kept data stores must be the task's own Acc@0.5 (IoU strictly above 0.5, VLM-R1's
    rule), checked on a real greedy evaluation of the shipped warm start."""
    from syngrpo.config import SHIPPED_POLICIES
    from syngrpo.experiments.kept import eval_entry, hex_hits, hits_hex
    from syngrpo.models.policy import load_policy
    from syngrpo.plugins import get_registry
    from syngrpo.train.evaluate import EvalResult, evaluate_policy

    bits = [1, 0, 0, 1, 1, 1, 0]
    assert hex_hits(hits_hex(bits), len(bits)) == bits
    registry = get_registry()
    task = registry.create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path, n=24, seed=3, split="eval", image_size=84, grid=3, position_code=True,
                                    n_shapes=(1, 1), relational_prob=0.0)
    bundle = load_policy(str(SHIPPED_POLICIES["tiny-warm-start"]), device="cpu", dtype="float32")
    result = evaluate_policy(bundle, task, samples, engine=registry.create("rollout_engines", "hf", bundle=bundle),
                             response_mode="syn", batch_size=24, max_new_tokens=80)
    entry = eval_entry(result)
    hits = hex_hits(entry["hits"], entry["n"])
    assert sum(hits) / len(hits) == pytest.approx(result.metrics["acc@0.5"])
    # at the boundary: an IoU of exactly 0.5 is a miss, as in the task's metric
    edge = EvalResult(metrics={}, records=[{"accuracy": 0.5}, {"accuracy": 0.5000001}])
    assert hex_hits(eval_entry(edge)["hits"], 2) == [0, 1]


def test_the_docs_generated_blocks_are_what_the_kept_data_gives():
    """No hand-typed number in a generated block of docs/study.md, docs/quickstart.md or README.md: each is what
    ``syngrpo study --report`` writes from docs/study/data."""
    from syngrpo.experiments.regenerate import BLOCK, DOCS, fill

    seen = set()
    for doc in DOCS:
        text = doc.read_text()
        seen |= {m["name"] for m in BLOCK.finditer(text)}
        assert fill(text) == text, f"{doc} differs from its kept data: run `syngrpo study --report` and commit"
    assert {"control-table", "control-claim", "mechanism-predictions"} <= seen


def test_fixed_difficulty_draws_what_the_options_say_whatever_the_description(tmp_path):
    """The mechanism experiment's synthesizer: a "busy" description adds a distractor and clutter under
    `procedural`; under `fixed_difficulty` it draws exactly what `procedural` draws for the description without
    those words. Its word list must stay the plugin's."""
    import syngrpo_procedural.background as procedural
    from PIL import Image

    from syngrpo.experiments.difficulty import DIFFICULTY_WORDS, FixedDifficulty, neutral
    from syngrpo.synthesis.pipeline import SynthesisRequest

    assert DIFFICULTY_WORDS == procedural._BUSY | procedural._CALM
    image = Image.new("RGB", (84, 84), (230, 230, 230))
    keep = Image.new("L", (84, 84), 0)

    def request(text):
        return SynthesisRequest(image=image, keep_mask=keep, boxes=[(28, 28, 56, 56)], labels=["red circle"],
                                description=text, seed=7)

    busy = "a crowded market, full of stalls, with stripes"
    options = {"distractors": 1, "clutter": 4, "tones": "vivid"}
    fixed = FixedDifficulty(**options).synthesize([request(busy)])[0]
    plain_proc = procedural.ProceduralSynthesizer(**options)
    assert fixed.tobytes() == plain_proc.synthesize([request(neutral(busy))])[0].tobytes()
    assert fixed.tobytes() != plain_proc.synthesize([request(busy)])[0].tobytes()  # the busy words did matter
    flat = np.asarray(FixedDifficulty(plain=True, tones="muted", distractors=0, clutter=0)
                      .synthesize([request(busy)])[0]).astype(int)
    assert (flat.max(axis=2) - flat.min(axis=2)).max() <= 30  # a muted, untextured background, nothing drawn on it


def test_mechanism_arms_differ_only_in_their_images(tmp_path):
    """From the collapsed checkpoint every arm keeps its temperature, format, steps and seed; only the data
    (and, with synthesis, R_diversity) differ."""
    from syngrpo.experiments.mechanism import ARMS as MECH_ARMS
    from syngrpo.experiments.mechanism import arm_keys, load_mechanism_config, train_config

    cfg = load_mechanism_config(REPO / "configs" / "mechanism_rec_toy.yaml")
    collapsed = {"checkpoint": str(tmp_path / "ckpt"), "temperature": 0.7}
    level = {"options": {"tones": "vivid", "distractors": 2, "clutter": 4}}
    data = {"train": tmp_path / "train.jsonl", "val": tmp_path / "val.jsonl"}
    made = {arm: train_config(cfg, arm_keys(cfg, arm, 3, collapsed, level, data, tmp_path / arm)) for arm in MECH_ARMS}
    for c in made.values():
        assert c.rollout.temperature == 0.7 and c.response_mode == "syn" and c.optim.max_steps == cfg.steps
        assert c.seed == 3 and c.model.policy.startswith(str(tmp_path / "ckpt")) and not c.synthesis.spawn_server
        assert c.synthesis.job_options == {}  # the quickstart's muted job options would override every level
    assert made["grpo"].synthesis.mode == made["offline"].synthesis.mode == "off"
    assert made["grpo"].diversity_weight == made["offline"].diversity_weight == 0.0
    t = {a: made[a].synthesis.transport_options for a in ("syn_grpo", "syn_grpo_fixed", "fresh_plain")}
    assert t["syn_grpo"]["synthesizer"] == "procedural" and "clutter" not in t["syn_grpo"]["synthesizer_options"]
    assert t["syn_grpo_fixed"]["synthesizer_options"] == {**level["options"], "plain": False}
    assert t["fresh_plain"]["synthesizer_options"]["plain"] is True
    assert all(made[a].diversity_weight == 1.0 and made[a].synthesis.mode == "sync" for a in t)


def test_mechanism_phase3_runs_seed_major_so_a_stop_leaves_whole_seeds():
    """Amendment 3's order: every arm of seed 0, then of seed 1, ...; the shards split that list, so two processes
    stopped at any moment have finished whole seeds and at most two runs of the next one."""
    from syngrpo.experiments.mechanism import load_mechanism_config, schedule

    cfg = load_mechanism_config(REPO / "configs" / "mechanism_rec_toy.yaml")
    whole = schedule(cfg)
    assert [(a, s) for _, a, s in whole] == [(a, s) for s in range(8) for a in cfg.arms]
    shards = [schedule(cfg, (i, 2)) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(whole)
    for cut in range(len(whole) + 1):  # both shards stopped after their runs before position `cut`
        done = {(a, s) for shard in shards for k, a, s in shard if k < cut}
        seeds = {s for _, s in done}
        whole_seeds = [s for s in seeds if all((a, s) in done for a in cfg.arms)]
        assert len(done) - len(cfg.arms) * len(whole_seeds) <= 2 * len(cfg.arms) - 2


def test_mechanism_report_judges_the_predictions_on_whole_seeds_only():
    """An experiment stopped by the clock (amendment 3) leaves runs of a seed whose other arms did not finish: the
    tables and the predictions use the seeds whose five arms all finished, and say how many that is."""
    from syngrpo.experiments.kept import hits_hex
    from syngrpo.experiments.regenerate import mechanism_predictions, mechanism_results, whole_seeds

    arms = ["grpo", "offline", "syn_grpo", "syn_grpo_fixed", "fresh_plain"]
    exp = {"config": {"arms": arms, "seeds": 8},
           "phases": {"collapse": {"tried": [], "chosen": None, "target": 0.7}, "difficulty": None}}

    def run(arm: str, seed: int, acc: float, zero: float) -> dict:
        n = 40
        hits = [i < round(acc * n) for i in range(n)]
        entry = {"metrics": {"acc@0.5": sum(hits) / n}, "n": n, "hits": hits_hex(hits)}
        return {"arm": arm, "seed": seed, "curves": {"diversity/zero_variance_groups": [zero] * 50},
                "eval": {"test_hard": entry, "test_plain": entry}}

    rows = [run(a, s, 0.5, 0.8) for s in (0, 1, 2) for a in arms]
    # seed 3: only grpo and syn_grpo finished, and they would change everything if they counted
    rows += [run("grpo", 3, 0.0, 0.0), run("syn_grpo", 3, 1.0, 0.0)]
    kept, whole, partial = whole_seeds(exp, rows)
    assert whole == [0, 1, 2] and partial == [3] and len(kept) == 15
    results = mechanism_results(exp, rows)
    assert "| GRPO (continued) | 3 | 20.0 ± 0.0 | 50.0 ± 0.0 |" in results
    assert ("Seeds analysed: 3 of the 8 planned, those whose 5 arms all finished (0, 1, 2); left out: 2 finished "
            "runs of seed 3") in results
    preds = mechanism_predictions(exp, rows)
    assert "grpo 20.0 %, syn_grpo 20.0 %" in preds  # seed 3's signal-rich runs left out
    assert "| 3 | signal:" in preds and "Predictions 3–6 are judged on the whole seeds only. Seeds analysed: 3" in preds
    # one whole seed: no paired interval, said so
    one = mechanism_predictions(exp, [r for r in rows if r["seed"] in (0, 3)])
    assert "| 3 | (phase 3) | 1 whole seed: a paired interval needs 2 | not run |" in one


def test_quickstart_control_is_the_main_job_and_its_one_switch(tmp_path):
    from syngrpo.config import QUICKSTART_CONFIG, load_train_config
    from syngrpo.experiments.control import load_control_config, train_config

    cfg = load_control_config(REPO / "configs" / "quickstart_control.yaml")
    assert cfg.seeds >= 8 and cfg.n_heldout >= 500 and set(cfg.arms) == {"grpo", "syn_grpo"}
    syn, grpo = (train_config(cfg, arm, 5, tmp_path / arm) for arm in ("syn_grpo", "grpo"))
    shipped = load_train_config(QUICKSTART_CONFIG)
    assert syn.synthesis == shipped.synthesis and syn.optim == shipped.optim and syn.rollout == shipped.rollout
    assert grpo.synthesis.mode == "off" and grpo.optim == shipped.optim and grpo.rollout == shipped.rollout
    assert syn.response_mode == grpo.response_mode == "syn"  # the answers held equal
    assert (syn.diversity_weight, grpo.diversity_weight) == (1.0, 0.0)


def test_report_keep_copies_a_finished_experiments_kept_data_and_refuses_an_unfinished_one(tmp_path):
    """``syngrpo study --report --keep DIR``: the docs are regenerated from docs/study/data/<experiment>/, so the
    copy goes by the experiment's own name; a folder with no kept data is refused with what to run."""
    from syngrpo.experiments.regenerate import keep

    with pytest.raises(ConfigError, match=r"no kept data .*syngrpo study --preset"):
        keep(tmp_path / "unfinished", data=tmp_path / "data")
    src = tmp_path / "qs" / "kept"
    src.mkdir(parents=True)
    (src / "experiment.json").write_text(json.dumps({"experiment": "quickstart-control"}))
    (src / "runs.jsonl").write_text('{"arm": "grpo"}\n')
    dest = keep(tmp_path / "qs", data=tmp_path / "data")
    assert dest == tmp_path / "data" / "quickstart-control"
    assert (dest / "runs.jsonl").read_text() == '{"arm": "grpo"}\n'
    (src / "experiment.json").write_text(json.dumps({"experiment": "elsewhere"}))
    with pytest.raises(ConfigError, match="no generated blocks"):
        keep(tmp_path / "qs", data=tmp_path / "data")
