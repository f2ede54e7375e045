"""The scoring workload of issue 5 item 3, shared by the benchmark and its memory subprocesses.

A tiny Qwen2.5-VL (text hidden 128, 4 layers: the shape of REFERENCE.md's
shared-prefix probe), one prompt of ~256 tokens (a 392 x 392 image = 196 merged
image tokens, plus the chat text), G = 6 completions of 64 tokens, one forward
and backward of a GRPO-shaped loss through :func:`syngrpo.models.scoring.completion_logprobs`.

Run as a script it measures the peak resident memory of one pass of one
variant in a fresh process (``--variant naive|shared``) and prints JSON: on a
CPU, torch has no allocator statistics, so the process's peak RSS is the
measure.  The peak is reset (``/proc/self/clear_refs``) after the model and
inputs are loaded, so it counts the pass alone; ``getrusage`` gives the
whole-process peak beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: where the benchmark runs: ``SYNGRPO_BENCH_DEVICE=cuda SYNGRPO_BENCH_DTYPE=bfloat16`` on a GPU machine
DEVICE = os.environ.get("SYNGRPO_BENCH_DEVICE", "cpu")
DTYPE = os.environ.get("SYNGRPO_BENCH_DTYPE", "float32")
GROUP = 6
COMPLETION_TOKENS = 64
IMAGE_SIZE = 392
QUESTION = "Locate every red circle and every blue square in this image, then describe a new background for it."
MODEL_SHAPE = {"text_hidden": 128, "layers": 4}


@dataclass
class Workload:
    policy: Any
    batch: Any  # PromptBatch, one row (collapsed)
    completion_ids: Any  # (G, 64)
    completion_mask: Any  # (G, 64)

    @property
    def prompt_tokens(self) -> int:
        return self.batch.prompt_length


def build_model(out_dir: str | Path) -> Path:
    from syngrpo.models.tiny_policy import build_tiny_policy

    return build_tiny_policy(out_dir, seed=0, **MODEL_SHAPE)


def make_workload(model_dir: str | Path, *, device: str = DEVICE, dtype: str = DTYPE) -> Workload:
    """The policy in train mode, its one prompt and G random completions (two rows end early)."""
    import torch
    from PIL import Image, ImageDraw

    from syngrpo.models.policy import encode_prompts, load_policy

    policy = load_policy(model_dir, device=device, dtype=dtype)
    policy.model.train()
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (225, 228, 230))
    draw = ImageDraw.Draw(image)
    draw.ellipse([40, 50, 150, 160], fill=(220, 40, 40))
    draw.rectangle([220, 200, 360, 330], fill=(40, 80, 220))
    batch = encode_prompts(policy, [image], [QUESTION]).to(policy.device, dtype=policy.dtype)
    gen = torch.Generator().manual_seed(0)
    n_text = len(policy.tokenizer) - 20  # ordinary BPE tokens, below the special ones
    ids = torch.randint(0, n_text, (GROUP, COMPLETION_TOKENS), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 50:] = 0  # completions that stopped early are padded on the right
    mask[4, 20:] = 0
    ids = ids * mask + policy.pad_token_id * (1 - mask)
    return Workload(policy, batch, ids.to(policy.device), mask.to(policy.device))


def loss_and_backward(w: Workload, *, shared_prefix: bool) -> tuple[Any, Any]:
    """One pass: log-probs and entropies of all G completions, a GRPO-shaped loss, backward."""
    import torch

    from syngrpo.models.scoring import completion_logprobs

    w.policy.model.zero_grad(set_to_none=True)
    logp, entropy = completion_logprobs(w.policy.model, w.batch, w.completion_ids, w.completion_mask,
                                        group_size=GROUP, shared_prefix=shared_prefix, with_entropy=True)
    advantages = torch.linspace(-1.0, 1.0, GROUP, device=logp.device)[:, None]  # per-row weights, as GRPO
    mask = w.completion_mask.to(logp.dtype)
    per_row = ((logp * advantages + 0.01 * entropy) * mask).sum(1) / mask.sum(1)
    (-per_row.mean()).backward()
    return logp.detach(), entropy.detach()


def gradients(w: Workload) -> dict[str, Any]:
    return {n: p.grad.detach().clone() for n, p in w.policy.model.named_parameters() if p.grad is not None}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def measure_peak_memory(model_dir: str, variant: str) -> dict[str, Any]:
    """Peak RSS of one forward+backward of ``variant`` in this process, in MiB (and CUDA's peak on a GPU)."""
    import gc

    import torch

    torch.set_num_threads(1)
    w = make_workload(model_dir)
    gc.collect()
    cuda = w.policy.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    before = _rss_kib("VmRSS")
    try:  # reset VmHWM (the peak) to the current RSS: Linux >= 4.0
        Path("/proc/self/clear_refs").write_text("5")
        reset = _rss_kib("VmHWM") <= before + 1024
    except OSError:
        reset = False
    loss_and_backward(w, shared_prefix=variant == "shared")
    peak = _rss_kib("VmHWM")
    gpu: dict[str, Any] = {}
    if cuda:
        torch.cuda.synchronize()
        gpu = {"cuda_pass_peak_mib": (torch.cuda.max_memory_allocated() - cuda_before) / 2**20}
    return {
        **gpu,
        "variant": variant,
        "device": str(w.policy.device),
        "dtype": str(w.policy.dtype),
        "prompt_tokens": w.prompt_tokens,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "pass_peak_mib": (peak - before) / 1024 if reset else None,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--variant", choices=["naive", "shared"], required=True)
    args = ap.parse_args(argv)
    json.dump(measure_peak_memory(args.model, args.variant), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
