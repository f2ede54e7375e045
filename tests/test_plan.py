"""``syngrpo plan``: per-GPU memory by part, pinned against hand arithmetic, and the paper configs' verdicts."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from syngrpo.cli import main
from syngrpo.models.architecture import Tensor, load_architecture
from syngrpo.scale.plan import GiB, PlanInputs, plan_memory

ROOT = Path(__file__).resolve().parents[1]
CONFIG_7B = ROOT / "configs" / "rec_qwen2_5_vl_7b.yaml"
CONFIG_3B = ROOT / "configs" / "rec_qwen2_5_vl_3b.yaml"

# Qwen2.5-VL-7B-Instruct's published figures
H, I, L, V, KV = 3584, 18944, 28, 152064, 4 * 128  # noqa: E741 - hidden, intermediate, layers, vocab, kv heads x head dim
HV, IV, D, PATCH_IN = 1280, 3420, 32, 3 * 2 * 14 * 14  # vision hidden, intermediate, depth, conv3d fan-in


def hand_counts() -> tuple[int, int, int]:
    """(all parameters, root-unit parameters, one decoder layer) of Qwen2.5-VL-7B, counted by hand."""
    layer = (H * H + H) + 2 * (H * KV + KV) + H * H + 3 * H * I + 2 * H  # q(+bias) k v(+bias) o, MLP, 2 norms
    block = 2 * HV + (HV * 3 * HV + 3 * HV) + (HV * HV + HV) + 2 * (HV * IV + IV) + (IV * HV + HV)
    merger = HV + (4 * HV * 4 * HV + 4 * HV) + (4 * HV * H + H)
    root = V * H + H + V * H + PATCH_IN * HV + merger  # embeddings, final norm, untied LM head, patch embed, merger
    return root + L * layer + D * block, root, layer


def test_architecture_of_the_7b_matches_the_published_count():
    arch = load_architecture("Qwen/Qwen2.5-VL-7B-Instruct")
    total, root, layer = hand_counts()
    assert arch.params == total == 8_292_166_656
    units = arch.units()
    assert units[""] == root
    assert units["model.language_model.layers.0"] == layer
    assert load_architecture("Qwen/Qwen2.5-VL-3B-Instruct").params == 3_754_622_976  # tied embeddings


def test_fsdp_shards_dim0_with_ceil_rows():
    t = Tensor("w", (5, 3), vision=False, unit="")
    assert [t.shard_numel(n) for n in (1, 2, 3, 4, 8)] == [15, 9, 6, 6, 3]
    assert Tensor("b", (7,), vision=False, unit="").shard_numel(2) == 4


def test_plan_of_the_7b_paper_config_on_4_gpus_equals_hand_arithmetic():
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config

    cfg = load_config(TrainConfig, CONFIG_7B)
    assert cfg.parallel.strategy == "fsdp" and cfg.model.max_pixels == 1280 * 28 * 28
    plan = plan_memory(load_architecture(cfg.model.policy), PlanInputs.from_config(cfg, gpus=4, gpu_memory_gib=80))
    P, root, layer = hand_counts()
    part = {p.name: p.bytes for p in plan.parts}
    # every 7B dim 0 (152064, 3584, 512, 18944, 1280, 3840, 3420, 5120) divides by 4: shards are exactly P / 4
    assert part["master weights (fp32)"] == 4 * P // 4
    assert part["gradients (fp32)"] == 4 * P // 4
    assert part["AdamW states (fp32)"] == 8 * P // 4
    assert part["reference model (bf16)"] == 2 * P // 4  # beta 0.04
    assert part["bf16 compute copy"] == 2 * (root + 2 * layer) + 6 * layer  # root + current/prefetched layer
    assert part["vLLM reservation"] == int(0.3 * 80 * GiB)
    # micro-batch: 20 prompts / 4 ranks = 5, grad_accum 20 -> 1 prompt x G 6 = 6 rows;
    # a row: 1,003,520 px / 28^2 = 1,280 image tokens + 256 text + 512 new = 2,048 tokens (checkpointing: no shared prefix)
    rows, tokens = 6, 6 * 2048
    text = tokens * L * 2 * H + tokens * 2 * (6 * H + 2 * KV + 4 * I)  # checkpointed inputs + one layer recomputed
    patches = rows * 1280 * 4
    vision = patches * D * 2 * HV + patches * 2 * (8 * HV + 4 * IV)
    assert part["activations"] == text + vision
    assert part["logits"] == rows * 513 * V * 4
    assert "KV cache (hf generate)" not in part  # vLLM samples
    update = sum(part[k] for k in ("master weights (fp32)", "gradients (fp32)", "AdamW states (fp32)",
                                   "reference model (bf16)", "vLLM reservation", "bf16 compute copy",
                                   "activations", "logits", "CUDA context"))
    assert plan.peak_bytes == update
    assert 70 < plan.peak_gib < 80 and plan.fits
    assert plan.state_bytes == 4 * P  # (4 + 4 + 8) B x P / 4 ranks: what part A's FSDP test compares with tensors


def test_image_tokens_add_up_over_the_images_of_a_prompt_by_hand_arithmetic():
    """Two images per prompt (issue 27 item 2): the 7B config's rows hold 2 x 1,280 image tokens, the vision
    tower runs on both images, and vLLM's max_model_len budgets both."""
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config

    cfg = load_config(TrainConfig, CONFIG_7B)
    one = plan_memory(load_architecture(cfg.model.policy), PlanInputs.from_config(cfg, gpus=4, gpu_memory_gib=80))
    inp = PlanInputs.from_config(cfg, gpus=4, gpu_memory_gib=80, images_per_sample=2)
    two = plan_memory(load_architecture(cfg.model.policy), inp)
    assert (one.image_tokens, two.image_tokens) == (1280, 2 * 1280)
    assert two.sequence_tokens == one.sequence_tokens + 1280 == 2 * 1280 + 256 + 512
    rows, tokens = 6, 6 * (2 * 1280 + 256 + 512)  # the hand arithmetic of the test above, with both images
    text = tokens * L * 2 * H + tokens * 2 * (6 * H + 2 * KV + 4 * I)
    patches = rows * 2 * 1280 * 4
    vision = patches * D * 2 * HV + patches * 2 * (8 * HV + 4 * IV)
    part = {p.name: p for p in two.parts}
    assert part["activations"].bytes == text + vision
    assert "12 image(s) x 5,120 patches" in part["activations"].how
    assert "max_model_len 3,328 " in part["vLLM reservation"].how  # 2 x 1,280 + 256 text + 512 new


def test_cli_plan_takes_the_images_per_prompt_from_the_flag_or_the_toy_data(capsys):
    assert main(["plan", "-c", str(CONFIG_7B), "--images", "2"]) in (0, 1)
    assert "(2,560 image tokens at most, 2 images per prompt)" in capsys.readouterr().out
    assert main(["plan", "--set", "data.toy.options={images_per_sample: 3}", "--set", "model.max_pixels=200704"]) in (0, 1)
    assert "(768 image tokens at most, 3 images per prompt)" in capsys.readouterr().out


def test_fsdp_on_one_rank_plans_a_whole_bf16_copy_as_measured_on_an_h100():
    """FSDP2 with one rank keeps each unit's unsharded bf16 copy: the H100 check measured 77.18 GiB in the 3B
    update phase, 71.86 planned per unit before (docs/performance.md); on two ranks units gather one at a time."""
    arch = load_architecture("Qwen/Qwen2.5-VL-3B-Instruct")
    inputs = dict(dtype="bfloat16", engine="hf", strategy="fsdp", batch_size=2, num_generations=6,
                  max_new_tokens=128, max_pixels=640 * 640, gradient_checkpointing=True)
    one = plan_memory(arch, PlanInputs(gpus=1, **inputs))
    two = plan_memory(arch, PlanInputs(gpus=2, **inputs))
    assert one.part("bf16 compute copy").bytes == 2 * arch.params
    assert two.part("bf16 compute copy").bytes < arch.params  # root + two units, far below a whole copy
    assert abs(one.phase_bytes("update") / GiB - 77.18) / 77.18 < 0.01  # within 1 % of the measured peak


def test_freeze_vision_and_lora_shrink_gradients_and_optimizer_state():
    arch = load_architecture("Qwen/Qwen2.5-VL-3B-Instruct")
    base = PlanInputs(gpus=1, engine="hf")
    full = plan_memory(arch, base)
    frozen = plan_memory(arch, PlanInputs(gpus=1, engine="hf", freeze_vision=True))
    lora = plan_memory(arch, PlanInputs(gpus=1, engine="hf", lora=True, lora_r=8, lora_targets=("q_proj",)))
    assert full.strategy == "single" and full.part("gradients (fp32)").bytes == 4 * arch.params
    assert frozen.part("gradients (fp32)").bytes == 4 * (arch.params - arch.vision_params)
    # q_proj of each of the 36 layers: 2048 -> 2048, adapters r x (in + out)
    assert lora.part("AdamW states (fp32)").bytes == 8 * 36 * 8 * (2048 + 2048)
    assert frozen.part("activations").bytes < full.part("activations").bytes


def test_cli_7b_paper_config_fits_on_4_gpus_of_80_gib(capsys):
    assert main(["plan", "-c", str(CONFIG_7B), "--gpus", "4", "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "fits: fsdp" in out and "| master weights (fp32) |" in out


def test_cli_7b_with_ddp_on_one_gpu_does_not_fit_and_says_why(capsys):
    assert main(["plan", "-c", str(CONFIG_7B), "--set", "parallel.strategy=ddp", "--gpus", "1",
                 "--gpu-memory", "80"]) == 1
    out = capsys.readouterr().out
    assert "does not fit: single needs" in out
    assert "largest parts: AdamW states (fp32)" in out
    assert "--set parallel.strategy=fsdp" in out and "--set model.lora.enabled=true" in out


def _config_kind(path: Path) -> str:
    """Which schema a file under configs/ is written for: ``train``, ``server``, ``study``, ``control`` or
    ``mechanism`` (exactly one)."""
    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.errors import ConfigError
    from syngrpo.experiments.control import ControlConfig
    from syngrpo.experiments.mechanism import MechanismConfig
    from syngrpo.experiments.study import StudyConfig
    from syngrpo.synthesis.server.config import ServerConfig

    kinds = []
    for kind, schema in (("train", TrainConfig), ("server", ServerConfig), ("study", StudyConfig),
                         ("control", ControlConfig), ("mechanism", MechanismConfig)):
        try:
            load_config(schema, path)
        except ConfigError:
            continue
        kinds.append(kind)
    assert len(kinds) == 1, f"{path}: validates as {kinds or 'none'} of train/server/study/control/mechanism configs"
    return kinds[0]


def real_model_configs() -> list[Path]:
    """Every training config under configs/ (globbed, any depth) whose policy is a real model: not ``tiny`` nor a
    shipped tiny checkpoint."""
    from syngrpo.config import SHIPPED_POLICIES, load_train_config

    out = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if _config_kind(path) != "train":
            continue
        policy = load_train_config(path).model.policy
        if policy != "tiny" and policy not in SHIPPED_POLICIES:
            out.append(path)
    return out


REAL_MODEL_CONFIGS = real_model_configs()


def test_the_glob_finds_every_paper_config():
    names = {str(p.relative_to(ROOT / "configs")) for p in REAL_MODEL_CONFIGS}
    # the paper's three tasks at 3B, REC at 7B, the ISR refinement stage and the six Table 1 rows (at least)
    assert len(names) >= 11 and "rec_qwen2_5_vl_7b.yaml" in names and "table1/grpo_offline.yaml" in names


@pytest.mark.parametrize("path", REAL_MODEL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_real_model_config_documents_its_hardware_and_fits_it_by_plan(path, capsys):
    """`syngrpo plan -c CONFIG` with no flags plans the hardware the config documents, and the run fits it; the
    header's torchrun line starts as many processes as ``hardware.gpus`` says."""
    import re

    from syngrpo.config import load_train_config

    cfg = load_train_config(path)
    assert cfg.hardware is not None, f"{path.name} documents no hardware: add hardware: {{gpus, gpu_memory_gib}}"
    assert main(["plan", "-c", str(path)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert f"{cfg.hardware.gpus} GPU(s) x {cfg.hardware.gpu_memory_gib:g} GiB (the config's hardware section)" in out
    assert cfg.optim.batch_size % cfg.hardware.gpus == 0  # the trainer needs the batch to split over the ranks
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert {int(n) for n in re.findall(r"--nproc_per_node=(\d+)", header)} <= {cfg.hardware.gpus}


def test_cli_flags_win_over_the_documented_hardware(capsys):
    assert main(["plan", "-c", str(CONFIG_3B), "--gpus", "1"]) == 1
    assert "1 GPU(s) x 80 GiB (--gpus; the config's hardware section)" in capsys.readouterr().out
    assert main(["plan", "-c", str(CONFIG_3B), "--gpu-memory", "32"]) == 1  # 36 GiB (vLLM takes 0.3 x 32)
    assert "4 GPU(s) x 32 GiB (the config's hardware section; --gpu-memory)" in capsys.readouterr().out


def test_cli_without_hardware_section_or_flags_plans_one_80_gib_gpu(capsys):
    assert main(["plan", "-c", str(CONFIG_3B), "--set", "hardware=null"]) == 1
    assert "1 GPU(s) x 80 GiB (default: the config documents no hardware)" in capsys.readouterr().out


def _smallest(out: str, what: str) -> str:
    line = next(line for line in out.splitlines() if line.strip().startswith(what))
    return line.split(":", 1)[1].strip()


def test_cli_that_does_not_fit_names_the_smallest_gpu_count_that_does(capsys):
    """7B on 2 GPUs: the message names the GPU count that fits at that memory, the smallest one the trainer
    accepts (a divisor of the batch of 20), with its plan, not only "double the GPUs"."""
    from syngrpo.config import load_train_config
    from syngrpo.scale.plan import plan_config

    assert main(["plan", "-c", str(CONFIG_7B), "--gpus", "2"]) == 1
    out = capsys.readouterr().out
    assert "smallest settings that fit (either one):" in out
    gpus = int(re.search(r"--gpus (\d+)", _smallest(out, "GPUs:")).group(1))
    cfg = load_train_config(CONFIG_7B)
    assert 20 % gpus == 0 and plan_config(cfg, gpus=gpus, gpu_memory_gib=80).fits
    for fewer in range(2, gpus):
        if 20 % fewer == 0:
            assert not plan_config(cfg, gpus=fewer, gpu_memory_gib=80).fits, fewer


def test_cli_names_the_smallest_set_of_knobs_that_fits(capsys):
    """The ISR refinement config as it was (ddp, no max_pixels: 183 GiB per GPU on 4 x 80 GiB): fsdp alone leaves
    116 GiB and no single knob fits, so the message names the pair that does."""
    from syngrpo.config import load_train_config
    from syngrpo.scale.plan import plan_config

    sets = ["--set", "parallel.strategy=auto", "--set", "model.max_pixels=null"]
    assert main(["plan", "-c", str(CONFIG_3B), *sets]) == 1
    out = capsys.readouterr().out
    knobs = _smallest(out, "knobs:")
    assert "--set parallel.strategy=fsdp" in knobs and "--set model.max_pixels=1003520" in knobs
    # what it names fits, by the same plan
    fixed = load_train_config(CONFIG_3B, ["parallel.strategy=fsdp", "model.max_pixels=1003520"])
    assert plan_config(fixed).fits
    assert not plan_config(load_train_config(CONFIG_3B, ["parallel.strategy=fsdp", "model.max_pixels=null"])).fits


def test_cli_plans_several_configs_each_on_its_own_hardware_in_one_table(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    paths = ["configs/rec_qwen2_5_vl_3b.yaml", "configs/rec_qwen2_5_vl_7b.yaml"]
    assert main(["plan", "-c", *paths]) == 0
    out = capsys.readouterr().out
    assert "| config | policy | hardware | strategy |" in out
    assert "| `configs/rec_qwen2_5_vl_7b.yaml` | Qwen/Qwen2.5-VL-7B-Instruct | 4 x 80 GiB | fsdp |" in out
    assert main(["plan", "-c", *paths, "--gpus", "1"]) == 1  # one of them does not fit: exit 1


def test_the_docs_table_of_the_shipped_configs_is_the_plan_of_today(capsys, monkeypatch):
    """docs/training.md's per-config table is the output of the command it names, run now, and that command's
    globs cover every real-model config."""
    page = (ROOT / "docs" / "training.md").read_text()
    start, end = "<!-- plan-table: begin -->", "<!-- plan-table: end -->"
    assert start in page and end in page
    block = page.split(start, 1)[1].split(end, 1)[0]
    command = re.search(r"`(syngrpo plan -c [^`]+)`", block).group(1).split()
    paths = [p for pattern in command[3:] for p in sorted(ROOT.glob(pattern))]
    assert set(paths) == set(REAL_MODEL_CONFIGS)
    monkeypatch.chdir(ROOT)  # the table names each config as the command line does (after the shell's globbing)
    assert main(["plan", "-c", *(str(p.relative_to(ROOT)) for p in paths)]) == 0
    table = "\n".join(line for line in capsys.readouterr().out.splitlines() if line.startswith("|"))
    assert table in block


def test_cli_plans_the_tiny_policy_and_a_local_directory_offline(tmp_path, capsys):
    import json

    from syngrpo.models.tiny_policy import build_tiny_policy

    assert main(["plan", "--set", "model.policy=tiny", "--set", f"model.tiny_dir={tmp_path / 'absent'}",
                 "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    from syngrpo.config import QUICKSTART_CONFIG, load_train_config

    options = load_train_config(QUICKSTART_CONFIG).model.tiny_options  # the quickstart's (plan with no -c plans the quickstart)
    path = build_tiny_policy(tmp_path / "tiny", **options)
    assert main(["plan", "--set", f"model.policy={path}", "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    # the builder's options and the built directory describe the same architecture
    assert built["plans"][0]["params"] == local["plans"][0]["params"] == json.loads(
        (path / "syngrpo_tiny.json").read_text())["parameters"]


def test_cli_unknown_hub_id_offline_is_a_clean_error(capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network wait on any machine
    assert main(["plan", "--set", "model.policy=nobody/no-such-model-xyz"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the architecture of 'nobody/no-such-model-xyz'" in err
    assert "local directory" in err


def test_plan_state_bytes_equal_a_real_float32_step_of_the_tiny_policy(tmp_path):
    """Weights, gradients and AdamW states counted from the tensors of one real step (CPU, one process)."""
    import torch

    from syngrpo.models.policy import load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy

    path = build_tiny_policy(tmp_path / "tiny")
    model = load_policy(path, dtype="float32", freeze_vision=True).model
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(0, 600, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable)
    moments = sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")

    plan = plan_memory(load_architecture(str(path)), PlanInputs(dtype="float32", freeze_vision=True, gpus=1))
    assert plan.part("weights (fp32)").bytes == weights
    assert plan.part("gradients (fp32)").bytes == grads
    assert plan.part("AdamW states (fp32)").bytes == moments
    assert plan.part("bf16 compute copy") is None  # float32: the weights are the compute copy


def fsdp_state_worker(model_dir: str, out: str) -> None:
    """One rank of ``torchrun --nproc_per_node=3``: fully_shard the tiny policy, one AdamW step, count local bytes."""
    import json

    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from syngrpo.models.policy import load_policy

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = load_policy(model_dir, dtype="float32", freeze_vision=True).model  # text-only batch: no vision grads
    for layer in model.model.language_model.layers:
        fully_shard(layer)
    for block in model.model.visual.blocks:
        fully_shard(block)
    fully_shard(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(0, 600, (2, 12), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()

    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    counts = {
        "weights": sum(local(p).numel() * 4 for p in model.parameters()),
        "grads": sum(local(p.grad).numel() * 4 for p in trainable),
        "moments": sum(local(v).numel() * 4 for s in opt.state.values() for k, v in s.items() if k != "step"),
    }
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, counts)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(every))
    dist.destroy_process_group()


@pytest.mark.slow
def test_plan_fsdp_shards_equal_fully_shard_local_tensors_on_three_gloo_ranks(tmp_path):
    """FSDP2 keeps ceil(dim0 / N) rows of each tensor on the first rank: the plan's per-rank bytes, exactly.

    Three ranks, because the tiny model's dims 32, 64, 96, 128 and 654 do not all divide by 3: a plan that divided
    the count by N instead of rounding each tensor's rows up would be 1.5 % short.
    """
    import json
    import os
    import shutil
    import subprocess
    import sys

    from syngrpo.models.tiny_policy import build_tiny_policy

    path = build_tiny_policy(tmp_path / "tiny")
    out = tmp_path / "counts.json"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=3", __file__, str(path), str(out)],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, _, rank2 = json.loads(out.read_text())
    plan = plan_memory(load_architecture(str(path)),
                       PlanInputs(dtype="float32", gpus=3, strategy="fsdp", freeze_vision=True))
    assert plan.part("weights (fp32)").bytes == rank0["weights"]
    assert plan.part("gradients (fp32)").bytes == rank0["grads"]
    assert plan.part("AdamW states (fp32)").bytes == rank0["moments"]
    assert rank2["weights"] < rank0["weights"] < 0.4 * plan_memory(
        load_architecture(str(path)), PlanInputs(dtype="float32", gpus=1)).part("weights (fp32)").bytes


if __name__ == "__main__":
    fsdp_state_worker(sys.argv[1], sys.argv[2])


def test_vllm_kv_cache_of_the_derived_max_model_len_is_counted_and_128k_does_not_start(capsys):
    """Without max_model_len vLLM sizes for the 7B's 128k context: 6.84 GiB of KV cache, which a 0.25 share of 80 GiB
    cannot hold beside the 15.45 GiB of bf16 weights. The engine derives 1,280 image + 256 text + 512 new tokens."""
    from syngrpo_vllm.memory import vllm_kv_cache

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.scale.plan import plan_config

    cfg = load_config(TrainConfig, CONFIG_7B, [])
    arch = load_architecture("Qwen/Qwen2.5-VL-7B-Instruct")
    inp = PlanInputs.from_config(cfg, gpus=4, gpu_memory_gib=80)
    how, problem = vllm_kv_cache(arch, inp)
    per_token = 2 * 2 * L * KV  # bf16 keys and values, every layer
    assert f"{per_token * 2048 / GiB:.3f} GiB per sequence of max_model_len 2,048" in how and problem is None
    long = PlanInputs.from_config(load_config(TrainConfig, CONFIG_7B, [
        "rollout.engine_options.max_model_len=128000", "rollout.engine_options.gpu_memory_utilization=0.25"]),
        gpus=4, gpu_memory_gib=80)
    assert round(per_token * 128000 / GiB, 2) == 6.84
    plan = plan_config(load_config(TrainConfig, CONFIG_7B, ["rollout.engine_options.max_model_len=128000",
                                                            "rollout.engine_options.gpu_memory_utilization=0.25"]),
                       gpus=4, gpu_memory_gib=80)
    assert plan.peak_gib < 80 and not plan.fits  # the memory adds up, but vLLM refuses to start
    assert "raise rollout.engine_options.gpu_memory_utilization above 0.28" in plan.problems[0]
    assert vllm_kv_cache(arch, long)[1] == plan.problems[0]
    assert main(["plan", "-c", str(CONFIG_7B), "--gpus", "4", "--gpu-memory", "80", "--set",
                 "rollout.engine_options.max_model_len=128000", "--set",
                 "rollout.engine_options.gpu_memory_utilization=0.25"]) == 1
    assert "does not fit: vLLM cannot start" in capsys.readouterr().out


def test_an_engine_that_declares_its_memory_is_planned_as_it_says(monkeypatch):
    """``plan`` knows no engine by name: a factory's ``plan_memory`` gives the parts, problems and knobs (the
    declaration of docs/hooks/rollout_engines.md); an engine that declares none samples from the policy."""
    import syngrpo.scale.plan as plan_module
    from syngrpo.hookspecs import hookimpl
    from syngrpo.scale.advice import advice, smallest_knob_set
    from syngrpo.scale.plan import EngineKnob, EngineMemory, MemoryPart
    from syngrpo.testing import registry_with

    def pooled(**options):
        raise AssertionError("plan never builds the engine")

    def plan_memory(arch, inp):
        share = float(inp.engine_options.get("memory_share", 0.5))
        problems = [] if share < 0.9 else ["the pool starves the trainer"]
        return EngineMemory(parts=[MemoryPart("pool", int(share * inp.gpu_memory_gib * GiB), "rollout", "share")],
                            problems=problems,
                            knobs=[EngineKnob("--set rollout.engine_options.memory_share=0.1", {"memory_share": 0.1})])

    pooled.plan_memory = plan_memory

    class Engines:
        @hookimpl
        def register_rollout_engines(self, register):
            register("pooled", pooled)
            register("plain", lambda **options: None)

    monkeypatch.setattr(plan_module, "get_registry", lambda: registry_with(Engines()))
    arch = load_architecture("Qwen/Qwen2.5-VL-3B-Instruct")
    inp = PlanInputs(gpus=1, engine="pooled", gpu_memory_gib=80, engine_options={"memory_share": 0.95})
    plan = plan_module.plan_memory(arch, inp)
    assert plan.part("pool").bytes == int(0.95 * 80 * GiB) and plan.part("KV cache (hf generate)") is None
    assert plan.problems == ["the pool starves the trainer"] and not plan.fits
    assert any(k == "--set rollout.engine_options.memory_share=0.1" for k, _, _ in advice(arch, inp))
    fix = smallest_knob_set(arch, replace(inp, gpu_memory_gib=200))
    assert fix is not None and "--set rollout.engine_options.memory_share=0.1" in fix.setting  # with config knobs
    plain = plan_module.plan_memory(arch, PlanInputs(gpus=1, engine="plain"))
    assert plain.part("KV cache (hf generate)") is not None and plain.part("pool") is None
