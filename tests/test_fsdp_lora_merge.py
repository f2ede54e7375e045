"""Issue 27 item 1: the weights the vLLM engine receives from a LoRA policy sharded with FSDP2 are the weights it
receives from the same policy held whole (adapters merged into the base, transformers names, no ``lora_`` tensor).

vLLM itself cannot run here (no GPU), so the test sits at its boundary:
:func:`syngrpo_vllm.engine.module_weights`, what ``sync_weights`` hands to ``load_weights``.  Two gloo ranks
(``torchrun --standalone``) shard a tiny Qwen2.5-VL with rank-4 adapters whose B is not zero (as after training);
rank 0 compares every batch with the non-sharded merge of an identical copy, and the policy must be left as it was
(adapters unmerged, shards untouched).  The file doubles as the worker script torchrun runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "o_proj"]}


def _policy(model_dir: str, dtype: str):
    import torch

    from syngrpo.models.policy import load_policy

    torch.manual_seed(0)
    model = load_policy(model_dir, dtype=dtype, lora=LORA).model
    with torch.no_grad():  # as after training: B away from its zero init (the merge is then not the base)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    return model


def _flat(batches) -> dict:
    return {n: t.clone() for batch in batches for n, t in batch}


def _locals(model) -> dict:
    return {n: (p.to_local() if hasattr(p, "to_local") else p).detach().clone() for n, p in model.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch_equal(a[n], b[n]) for n in a)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def merge_worker(model_dir: str, out: str, dtype: str) -> None:
    import copy

    import torch
    import torch.distributed as dist
    from syngrpo_vllm.engine import module_weights

    from syngrpo.scale.fsdp import shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    result = {}
    if dist.get_rank() == 0:
        whole = _policy(model_dir, dtype)
        # peft's own merge, on a copy: the outside reference
        result["peft"] = {n: t.clone() for n, t in copy.deepcopy(whole).merge_and_unload().state_dict().items()}
        before = _locals(whole)
        result["whole_order"] = [n for batch in module_weights(whole) for n, _ in batch]
        result["whole"] = _flat(module_weights(whole))
        result["whole_untouched"] = _same(before, _locals(whole))
    model = shard(_policy(model_dir, dtype), mp_policy=None)
    before = _locals(model)
    batches = list(module_weights(model))  # a collective: every rank gathers each module in the same order
    result["sharded_order"] = [n for batch in batches for n, _ in batch]
    result["sharded"] = _flat(batches)
    result["sharded_untouched"] = _same(before, _locals(model))
    if dist.get_rank() == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fsdp_lora_weights_for_vllm_equal_the_non_sharded_merge(tmp_path, dtype):
    pytest.importorskip("peft")
    import torch

    from syngrpo.models.tiny_policy import build_tiny_policy

    model_dir = build_tiny_policy(tmp_path / "tiny", seed=0)
    out = tmp_path / "weights.pt"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", __file__, str(model_dir), str(out), dtype],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = torch.load(out)
    peft, whole, sharded = r["peft"], r["whole"], r["sharded"]
    assert r["sharded_order"] == r["whole_order"]  # vLLM receives the same batches in the same order
    assert sharded.keys() == whole.keys() == peft.keys()
    assert not any("lora_" in n or "base_layer" in n for n in whole)
    merged = [n for n in peft if "language_model" in n and n.endswith(("q_proj.weight", "v_proj.weight"))]
    base = _policy(str(model_dir), dtype).get_base_model().state_dict()
    assert merged and not torch.equal(peft[merged[0]], base[merged[0].replace(".weight", ".base_layer.weight")])
    for name, want in peft.items():
        assert whole[name].dtype == sharded[name].dtype == want.dtype, name
        # bf16: peft rounds B @ A to bf16 before adding it; one rounding of the sum differs by at most one ulp
        tol = 0.0 if dtype == "float32" else 2 ** -7
        assert torch.allclose(whole[name].float(), want.float(), rtol=tol, atol=1e-6), name
        assert torch.equal(sharded[name], whole[name]), name
    # syncing weights must not change the policy: merging in place and back leaves rounding in a bf16 base
    assert r["whole_untouched"] and r["sharded_untouched"]


def test_a_sharded_lora_checkpoint_state_merges_as_peft_merges(tmp_path):
    """What eval and export read from a sharded FSDP + LoRA checkpoint (the peft model's full state and its
    ``adapter_config.json``) is peft's own ``merge_and_unload`` of that model, in transformers names."""
    pytest.importorskip("peft")
    import copy

    import torch

    from syngrpo.models.policy import merged_lora_state
    from syngrpo.models.tiny_policy import build_tiny_policy

    model = _policy(str(build_tiny_policy(tmp_path / "tiny", seed=0)), "float32")
    model.peft_config["default"].save_pretrained(str(tmp_path))
    state = {n: t.clone() for n, t in model.state_dict().items()}
    want = copy.deepcopy(model).merge_and_unload().state_dict()
    got = merged_lora_state(state, tmp_path)
    assert got.keys() == want.keys()
    q = next(n for n in want if "language_model" in n and n.endswith("q_proj.weight"))
    assert not torch.equal(want[q], state["base_model.model." + q.replace(".weight", ".base_layer.weight")])
    for name, tensor in want.items():
        assert torch.allclose(got[name], tensor, rtol=0, atol=1e-6), name
    plain = {n: t for n, t in want.items()}
    assert merged_lora_state(plain, tmp_path) is plain  # a state without adapters passes through



def test_a_gathered_lora_checkpoint_is_read_by_eval_and_export_as_the_merged_model(tmp_path):
    """A LoRA run that is not sharded saves peft's adapters only in ``model/`` (the base never changes under
    LoRA); ``syngrpo eval`` / ``export`` read it as the base (``base_model_name_or_path`` of its
    ``adapter_config.json``, where resuming reads it from ``model.policy``) with the adapters merged: the policy's
    logits, and no ``lora_`` tensor in the export."""
    pytest.importorskip("peft")
    import torch
    from safetensors import safe_open

    from syngrpo.commands.export import export_policy
    from syngrpo.models.policy import encode_prompts, load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy
    from syngrpo.rundir.checkpoint import model_dir, save_checkpoint
    from syngrpo.train.evaluate import load_checkpoint_policy

    tiny = str(build_tiny_policy(tmp_path / "tiny", seed=0))
    bundle = load_policy(tiny, dtype="float32", lora=LORA)
    with torch.no_grad():  # as after training: B away from its zero init (the merge is then not the base)
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    ckpt = save_checkpoint(tmp_path / "run", 1, model=bundle.model, processor=bundle.processor, optimizer=None,
                           scheduler=None, state={})
    assert (model_dir(ckpt) / "adapter_model.safetensors").is_file()
    assert not (model_dir(ckpt) / "model.safetensors").exists()  # adapters only, as before

    from PIL import Image

    image = Image.new("RGB", (112, 84), (200, 30, 30))
    batch = encode_prompts(bundle, [image], ["Locate the red square."])
    with torch.no_grad():
        want = bundle.model(**batch.model_inputs()).logits
        base = load_policy(tiny, dtype="float32").model(**batch.model_inputs()).logits
    assert (want - base).abs().max() > 1e-3  # the adapters matter

    read = load_checkpoint_policy(tmp_path / "run", dtype="float32", device="cpu")
    assert not read.lora and read.name_or_path == tiny  # vLLM reads the base from there, then gets merged weights
    with torch.no_grad():
        got = read.model(**batch.model_inputs()).logits
    assert torch.allclose(got, want, rtol=0, atol=1e-5), float((got - want).abs().max())

    out = export_policy(tmp_path / "run", tmp_path / "export", dtype="float32")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not any("lora_" in k for k in f.keys())
    with torch.no_grad():
        exported = load_policy(out, dtype="float32").model(**batch.model_inputs()).logits
    assert torch.allclose(exported, want, rtol=0, atol=1e-5)


def test_a_gathered_lora_checkpoint_whose_base_is_gone_names_the_field_to_fix(tmp_path):
    pytest.importorskip("peft")
    import json

    from syngrpo.errors import ConfigError
    from syngrpo.models.policy import load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy
    from syngrpo.rundir.checkpoint import model_dir, save_checkpoint

    bundle = load_policy(str(build_tiny_policy(tmp_path / "tiny", seed=0)), dtype="float32", lora=LORA)
    ckpt = save_checkpoint(tmp_path / "run", 1, model=bundle.model, processor=bundle.processor, optimizer=None,
                           scheduler=None, state={})
    config = model_dir(ckpt) / "adapter_config.json"
    data = json.loads(config.read_text())
    data["base_model_name_or_path"] = str(tmp_path / "moved-away")
    config.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="base_model_name_or_path"):
        load_policy(model_dir(ckpt), dtype="float32")

if __name__ == "__main__":
    merge_worker(sys.argv[1], sys.argv[2], sys.argv[3])
