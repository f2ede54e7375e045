"""Where one ``hf`` rollout spends its time: the benchmark's tiny Qwen2.5-VL and prompts, one torch thread.

    .venv/bin/python scripts/profile_rollout.py [--group 6] [--image-size 112] [--rounds 7]

Steps the first two prompts of the one-GRPO-step benchmark's toy REC data (tests/benchmarks/peers_grpo.py:
2 prompts, 48 new tokens, temperature 1) through the engine as transformers ``generate`` samples them
(``shared_prefix: false``) and as the shared-prefix loop does (issue 26 item 5), interleaved, and splits each
rollout's wall time with forward hooks: the vision tower, the language model's prefill (its forward over more
than one token), its decoding forwards (one token each), and everything else (the multimodal wrappers and the
output head, token sampling, logits processors, ``generate``'s own bookkeeping, the engine's post-processing).  Medians over the
rounds; prints a markdown table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--new-tokens", type=int, default=48)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "tests"))
    from benchmarks.peers_grpo import syngrpo_trainer

    from syngrpo.data.images import load_rgb
    from syngrpo.models.policy import encode_prompts
    from syngrpo.models.tiny_policy import build_tiny_policy
    from syngrpo.plugins import get_registry
    from syngrpo.train.evaluate import build_prompts

    tmp = Path(tempfile.mkdtemp(prefix="profile-rollout-"))
    policy_dir = build_tiny_policy(tmp / "tiny")
    trainer = syngrpo_trainer(
        tmp / "run", policy_dir, group=args.group, image_size=args.image_size, new_tokens=args.new_tokens, batch=2
    )
    bundle = trainer.bundle
    samples = list(trainer.train_samples)[:2]
    prompts = encode_prompts(
        bundle, [load_rgb(s.image) for s in samples], build_prompts(trainer.task, samples, "plain")
    )
    model = bundle.model
    clock = {"t0": 0.0, "vision": 0.0, "prefill": 0.0, "decode": 0.0}

    def forward_pre(module, a, kw):
        clock["t0"] = time.perf_counter()
        x = kw.get("inputs_embeds")
        x = x if x is not None else kw.get("input_ids")
        clock["kind"] = "prefill" if x is None or x.shape[1] > 1 else "decode"

    def forward_post(module, a, kw, out):
        clock[clock["kind"]] += time.perf_counter() - clock["t0"]

    def vision_pre(module, a, kw):
        clock["v0"] = time.perf_counter()

    def vision_post(module, a, kw, out):
        clock["vision"] += time.perf_counter() - clock["v0"]

    hooks = [
        model.model.language_model.register_forward_pre_hook(forward_pre, with_kwargs=True),
        model.model.language_model.register_forward_hook(forward_post, with_kwargs=True),
        model.model.visual.register_forward_pre_hook(vision_pre, with_kwargs=True),
        model.model.visual.register_forward_hook(vision_post, with_kwargs=True),
    ]
    engines = {
        "generate": get_registry().create("rollout_engines", "hf", bundle=bundle, shared_prefix=False),
        "shared prefix": get_registry().create("rollout_engines", "hf", bundle=bundle),
    }
    parts = ("total", "vision", "prefill", "decode", "other")
    rows: dict[str, dict[str, list[float]]] = {name: {p: [] for p in parts} for name in engines}
    steps: dict[str, list[int]] = {name: [] for name in engines}
    for r in range(args.rounds + 1):
        order = list(engines.items()) if r % 2 else list(reversed(engines.items()))
        for name, engine in order:
            for k in ("vision", "prefill", "decode"):
                clock[k] = 0.0
            t0 = time.perf_counter()
            rollout = engine.generate(
                bundle, prompts, num_generations=args.group, temperature=1.0, top_p=1.0,
                max_new_tokens=args.new_tokens, generator_seed=r,
            )  # fmt: skip
            total = time.perf_counter() - t0
            if r == 0:
                continue  # warm-up
            got = {"total": total, "vision": clock["vision"], "prefill": clock["prefill"], "decode": clock["decode"]}
            got["other"] = total - got["vision"] - got["prefill"] - got["decode"]
            for p in parts:
                rows[name][p].append(got[p])
            steps[name].append(int(rollout.completion_ids.shape[1]))
    for h in hooks:
        h.remove()
    trainer.close()
    print(
        f"\nG {args.group}, 2 prompts of {prompts.prompt_length} tokens ({args.image_size} px images), "
        f"{args.new_tokens} new tokens, {args.rounds} rounds (medians, ms; share of the rollout)\n"
    )
    print("| part | " + " | ".join(engines) + " |")
    print("|---|" + "---|" * len(engines))
    med = {name: {p: statistics.median(v) * 1e3 for p, v in rows[name].items()} for name in engines}
    for p in parts:
        cells = [
            f"{med[n][p]:.1f}" + ("" if p == "total" else f" ({med[n][p] / med[n]['total']:.0%})") for n in engines
        ]
        print(f"| {p} | " + " | ".join(cells) + " |")
    ratio = med["shared prefix"]["total"] / med["generate"]["total"]
    print(f"\nshared prefix / generate: {ratio:.3f}; decoding steps per rollout: "
          + ", ".join(f"{n} {statistics.median(s):.0f}" for n, s in steps.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
