"""The training config: paper defaults, errors that name the key, and every shipped config validates."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml

from syngrpo.config import QUICKSTART_CONFIG, TrainConfig, load_train_config
from syngrpo.config.io import dump_config, load_yaml
from syngrpo.errors import ConfigError
from syngrpo.train.preflight import check_config

REPO = Path(__file__).resolve().parents[2]
#: the paper-task configs (globbed: a new model size or task is picked up); the Table 1 rows: test_table1_configs.py
PAPER_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*_qwen*.yaml"))
SHIPPED = [REPO / "configs" / name for name in PAPER_CONFIGS] + [QUICKSTART_CONFIG]


def test_defaults_are_the_papers_settings():
    cfg = TrainConfig()
    assert cfg.optim.lr == 1e-6
    assert cfg.optim.batch_size == 20
    assert cfg.optim.epochs == 5
    assert cfg.rollout.num_generations == 6
    assert cfg.synthesis.gamma == 0.7
    assert cfg.synthesis.mode == "async"
    assert cfg.synthesis.description_selection == "diversity"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_train_config(path)
    # and the resolved config written into a run directory loads back to the same object
    assert TrainConfig.model_validate(yaml.safe_load(dump_config(cfg))) == cfg


def test_paper_configs_keep_the_papers_optimisation_settings():
    for name in PAPER_CONFIGS:
        cfg = load_train_config(REPO / "configs" / name)
        assert (cfg.optim.lr, cfg.optim.batch_size, cfg.optim.epochs) == (1e-6, 20, 5), name
        assert (cfg.rollout.num_generations, cfg.synthesis.gamma) == (6, 0.7), name
        assert cfg.synthesis.mode == "async" and cfg.synthesis.servers, name


def test_the_isr_refinement_config_keeps_the_perception_stages_settings():
    """Its header says so: the paper gives no hyper-parameters for the refinement stage. The configs compared whole,
    only the task and its data differ."""
    def flat(value, prefix=""):
        if isinstance(value, dict) and value:
            return {k: v for key, sub in value.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    refine = flat(load_train_config(REPO / "configs" / "isr_refine_qwen2_5_vl_3b.yaml").model_dump(mode="json"))
    perception = flat(load_train_config(REPO / "configs" / "isr_qwen2_5_vl_3b.yaml").model_dump(mode="json"))
    differ = {k for k in refine.keys() | perception.keys() if refine.get(k, "-") != perception.get(k, "-")}
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in differ} == {"data.task", "data.task_options",
                                                                         "data.train", "data.eval"}


def test_the_hardware_section_is_optional_validated_and_both_figures_are_needed():
    assert TrainConfig().hardware is None
    cfg = load_train_config(overrides=["synthesis.mode=off", "hardware={gpus: 4, gpu_memory_gib: 80}"])
    assert (cfg.hardware.gpus, cfg.hardware.gpu_memory_gib) == (4, 80.0)
    with pytest.raises(ConfigError) as err:
        load_train_config(overrides=["synthesis.mode=off", "hardware.gpus=0", "hardware.gpu_memory_gib=-1"])
    assert "hardware.gpus" in str(err.value) and "hardware.gpu_memory_gib" in str(err.value)
    with pytest.raises(ConfigError, match=r"hardware\.gpu_memory_gib: Field required"):
        load_train_config(overrides=["synthesis.mode=off", "hardware.gpus=4"])


def test_the_trainer_only_warns_when_its_process_count_differs_from_the_documented_gpus(
        tiny_policy_dir, config_for, tmp_path, caplog):
    """The section describes the machine the config was written for; one process on a config for 4 GPUs trains
    (the tests do) but says that the memory plan was made for another machine."""
    import logging

    from syngrpo.train.trainer import Trainer

    cfg = config_for(tiny_policy_dir, "hardware={gpus: 4, gpu_memory_gib: 80}")
    with caplog.at_level(logging.WARNING, logger="syngrpo.train.trainer"), Trainer(cfg, tmp_path / "run") as trainer:
        trainer.setup()
    warned = [r.getMessage() for r in caplog.records if "hardware.gpus" in r.getMessage()]
    assert len(warned) == 1 and "4 GPUs" in warned[0] and "1 process" in warned[0]
    assert "syngrpo plan" in warned[0]
    caplog.clear()
    cfg = config_for(tiny_policy_dir, "hardware={gpus: 1, gpu_memory_gib: 80}")
    with caplog.at_level(logging.WARNING, logger="syngrpo.train.trainer"), Trainer(cfg, tmp_path / "run1") as trainer:
        trainer.setup()
    assert not [r for r in caplog.records if "hardware.gpus" in r.getMessage()]


def test_the_eval_split_can_take_its_images_from_another_root(tmp_path):
    """``data.eval_image_root``: the Table 1 offline row trains on a file that names its images relative to itself
    (``data.image_root: null``) and evaluates on the paper's evaluation file under the paper's image root, as the
    other rows do; the trainer and the pre-flight check read each split from its own root."""
    import json

    from PIL import Image

    from syngrpo.plugins import get_registry
    from syngrpo.train.data import load_split
    from syngrpo.train.preflight import check_config

    (tmp_path / "offline" / "images").mkdir(parents=True)
    (tmp_path / "coco").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "offline" / "images" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "coco" / "b.png")
    record = {"normal_caption": "the square", "solution": [1, 1, 8, 8], "width": 32, "height": 32}
    (tmp_path / "offline" / "train.jsonl").write_text(json.dumps({**record, "image": "images/a.png"}) + "\n")
    (tmp_path / "eval.jsonl").write_text(json.dumps({**record, "image": "b.png"}) + "\n")
    cfg = load_train_config(overrides=["synthesis.mode=off", "model.policy=tiny",
                                       f"data.train={tmp_path / 'offline' / 'train.jsonl'}",
                                       f"data.eval={tmp_path / 'eval.jsonl'}", "data.image_root=null",
                                       f"data.eval_image_root={tmp_path / 'coco'}"])
    task = get_registry().create("tasks", "rec")
    assert load_split(cfg, task, "train", tmp_path / "run")[0].image == str(tmp_path / "offline" / "images" / "a.png")
    assert load_split(cfg, task, "eval", tmp_path / "run")[0].image == str(tmp_path / "coco" / "b.png")
    assert check_config(cfg).errors == []
    # without it the evaluation file's images are looked for next to it
    cfg = load_train_config(overrides=["synthesis.mode=off", f"data.eval={tmp_path / 'eval.jsonl'}"])
    assert load_split(cfg, task, "eval", tmp_path / "run")[0].image == str(tmp_path / "b.png")


def test_quickstart_is_package_data_and_spawns_its_own_server():
    data = load_yaml(QUICKSTART_CONFIG)
    assert data["model"]["policy"] == "tiny-warm-start"
    cfg = load_train_config(QUICKSTART_CONFIG)
    assert cfg.synthesis.spawn_server and not cfg.sft.enabled  # it starts from the shipped warm start


def test_the_shipped_warm_start_is_package_data_that_localises_and_says_how_it_was_made():
    """The quickstart's starting point: a checkpoint in the package, which finds the object on held-out toy
    images far above chance (the quickstart's chance rows are ~10 %), and carries its own recipe's stats."""
    import json

    from syngrpo.config import SHIPPED_POLICIES
    from syngrpo.models.policy import load_policy
    from syngrpo.models.resolve import resolve_policy
    from syngrpo.plugins import get_registry
    from syngrpo.train.evaluate import evaluate_policy

    cfg = load_train_config(QUICKSTART_CONFIG)
    path = resolve_policy(cfg.model)
    assert path == str(SHIPPED_POLICIES["tiny-warm-start"])
    files = {p.name: p.stat().st_size for p in SHIPPED_POLICIES["tiny-warm-start"].iterdir()}
    assert sum(files.values()) < 5 * 2**20 and "model.safetensors" in files  # "a few MB"
    stats = json.loads((SHIPPED_POLICIES["tiny-warm-start"] / "sft_stats.json").read_text())
    assert stats["plain"]["steps"] == cfg.sft.plain_steps and stats["steps"] == cfg.sft.steps
    registry = get_registry()
    task = registry.create("tasks", "rec")
    toy = cfg.data.toy
    samples = task.make_toy_dataset(Path(tempfile.mkdtemp()) / "eval", n=24, seed=toy.seed, split="eval",
                                    image_size=toy.image_size, **toy.options)
    bundle = load_policy(path, device="cpu", dtype="float32")
    result = evaluate_policy(bundle, task, samples, engine=registry.create("rollout_engines", "hf", bundle=bundle),
                             response_mode="syn", batch_size=24, max_new_tokens=80, progress=False)
    assert result.metrics["acc@0.5"] >= 0.75 and result.metrics["format"] == 1.0


def test_a_group_of_one_rollout_is_rejected_with_the_key_named():
    with pytest.raises(ConfigError, match=r"rollout\.num_generations: .*at least 2"):
        load_train_config(overrides=["synthesis.mode=off", "rollout.num_generations=1"])


def test_misspelt_key_is_named():
    with pytest.raises(ConfigError, match=r"optim\.learning_rate: unknown key"):
        load_train_config(overrides=["synthesis.mode=off", "optim.learning_rate=1e-5"])


def test_out_of_range_values_name_their_keys():
    with pytest.raises(ConfigError) as err:
        load_train_config(overrides=["synthesis.mode=off", "synthesis.gamma=1.5", "optim.lr=0"])
    assert "synthesis.gamma" in str(err.value) and "optim.lr" in str(err.value)


def test_bare_yaml_off_means_synthesis_off():
    cfg = load_train_config(overrides=["synthesis.mode=off"])  # YAML 1.1 reads it as false
    assert cfg.synthesis.mode == "off" and not cfg.synthesis.enabled
    assert cfg.response_mode == "plain"


def test_synthesis_without_any_server_is_an_error_naming_the_key():
    # whether a transport needs a server is the transport plugin's to say: pre-flight asks the registry
    with pytest.raises(ConfigError, match=r"synthesis\.servers"):
        check_config(load_train_config(), data=False).raise_for_errors()
    cfg = load_train_config(overrides=["synthesis.servers=[http://127.0.0.1:8765]"])
    assert cfg.response_mode == "syn"


def test_plain_responses_cannot_feed_synthesis():
    with pytest.raises(ConfigError, match=r"rollout\.response_format"):
        load_train_config(overrides=["synthesis.spawn_server=true", "rollout.response_format=plain"])


def test_grad_accum_larger_than_the_batch_is_rejected():
    with pytest.raises(ConfigError, match=r"optim: .*grad_accum"):
        load_train_config(overrides=["synthesis.mode=off", "optim.batch_size=2", "optim.grad_accum=4"])


def test_duplicate_reward_terms_are_rejected():
    with pytest.raises(ConfigError, match=r"rewards\.terms: .*listed twice"):
        load_train_config(overrides=["synthesis.mode=off", "rewards.terms=[{name: accuracy}, {name: accuracy}]"])


def test_unknown_aggregation_lists_the_choices():
    with pytest.raises(ConfigError, match=r"algorithm\.aggregation: .*sequence_mean"):
        load_train_config(overrides=["synthesis.mode=off", "algorithm.aggregation=mean"])


def test_config_file_errors_say_which_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  batch_size: 0\nsynthesis:\n  mode: off\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n  optim\.batch_size"):
        load_train_config(p)


def _dotted_keys(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        args = getattr(field.annotation, "__args__", ())
        optional_section = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None) \
            if type(None) in args else None
        if optional_section is not None:  # a section that may be null (hardware): its keys are documented too
            yield f"{prefix}{name}"
            yield from _dotted_keys(optional_section, f"{prefix}{name}.")
        elif isinstance(default, BaseModel) and name not in ("advantage", "policy_loss"):
            yield from _dotted_keys(type(default), f"{prefix}{name}.")
        elif name in ("advantage", "policy_loss"):
            yield f"{prefix}{name}.name"
            yield f"{prefix}{name}.options"
        else:
            yield f"{prefix}{name}"


def test_every_config_key_is_documented():
    page = (REPO / "docs" / "configuration.md").read_text()
    missing = [key for key in _dotted_keys(TrainConfig) if f"`{key}`" not in page]
    assert not missing, f"docs/configuration.md lacks {missing}"
