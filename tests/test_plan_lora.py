"""Issue 27 item 1: ``syngrpo plan`` counts a LoRA run as the trainer holds it (a frozen base in the compute dtype,
float32 adapters, sharded over the ranks under FSDP like every parameter) and offers LoRA under FSDP."""

from __future__ import annotations

import pytest

from syngrpo.models.architecture import load_architecture
from syngrpo.scale.advice import knobs
from syngrpo.scale.plan import PlanInputs, plan_memory

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_plan_weights_of_a_lora_run_equal_the_loaded_policy(tmp_path, dtype):
    """Counted against the tensors the trainer loads: ``load_policy`` with LoRA in the load dtype, then the
    adapters upcast to their float32 masters (what :class:`~syngrpo.scale.precision.Precision` does)."""
    pytest.importorskip("peft")
    import torch

    from syngrpo.models.policy import load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy
    from syngrpo.scale.precision import Precision

    path = build_tiny_policy(tmp_path / "tiny")
    precision = Precision.for_model(dtype, "cpu")
    model = load_policy(path, dtype=precision.load_dtype(lora=True), lora=LORA).model
    precision.upcast_trainable(model)
    base = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    adapters = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    plan = plan_memory(load_architecture(str(path)), PlanInputs(dtype=dtype, gpus=1, lora=True, lora_r=4,
                                                               lora_targets=("q_proj", "v_proj")))
    half = "bf16" if dtype == "bfloat16" else "fp32"
    assert plan.part(f"frozen base ({half})").bytes == base
    assert plan.part("LoRA adapters (fp32)").bytes == adapters
    assert plan.part("AdamW states (fp32)").bytes == 2 * adapters
    assert plan.part("bf16 compute copy") is None  # the bf16 base is its own compute copy


def test_fsdp_plans_lora_shards_and_advice_offers_lora_without_leaving_fsdp():
    arch = load_architecture("Qwen/Qwen2.5-VL-3B-Instruct")
    inp = PlanInputs(gpus=4, strategy="fsdp", dtype="bfloat16", engine="hf")
    lora = PlanInputs(gpus=4, strategy="fsdp", dtype="bfloat16", engine="hf", lora=True, lora_r=8,
                      lora_targets=("q_proj",))
    one = PlanInputs(gpus=1, strategy="single", dtype="bfloat16", engine="hf", lora=True, lora_r=8,
                     lora_targets=("q_proj",))
    sharded, whole = plan_memory(arch, lora), plan_memory(arch, one)
    # q_proj 2048 -> 2048 in 36 layers: A is 8 x 2048 (2 of 8 rows per rank), B 2048 x 8 (512 of 2048 rows)
    assert sharded.part("LoRA adapters (fp32)").bytes == 4 * 36 * (2 * 2048 + 512 * 8)
    assert whole.part("LoRA adapters (fp32)").bytes == 4 * 36 * 8 * (2048 + 2048)
    assert sharded.part("frozen base (bf16)").bytes < whole.part("frozen base (bf16)").bytes / 3
    labels = [k.label for k in knobs(inp, arch)]
    assert "--set model.lora.enabled=true" in labels
    chosen = next(k for k in knobs(inp, arch) if k.label == "--set model.lora.enabled=true")
    assert chosen.inputs.lora and chosen.inputs.resolved_strategy == "fsdp"
