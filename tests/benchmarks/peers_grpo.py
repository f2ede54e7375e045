"""One plain GRPO step of syngrpo and of TRL's ``GRPOTrainer`` on the same tiny Qwen2.5-VL (issue 16).

Both get the same tiny checkpoint (:func:`syngrpo.models.tiny_policy.build_tiny_policy`), the same
toy REC prompts (syngrpo's question + plain response-format instructions) and images, G, max new
tokens, temperature, beta, learning rate, one optimizer step per step, HF ``generate``, one torch
thread, float32 on the CPU, and the same rewards (syngrpo's accuracy + format terms, which TRL calls
through a reward function).  TRL renders the prompt with the processor's chat template from a
conversational message; syngrpo with its model family's template (same template, same image).

TRL's ``train()`` drives its own loop, so the two are interleaved from inside it: a callback runs one
syngrpo step before TRL's step on odd rounds and after it on even ones.  TRL's rollout is timed by
wrapping its ``_generate`` (HF generate + decoding) and ``_generate_and_score_completions`` (that,
plus rewards and the old/reference log-probabilities); its update is the rest of the step.

Peak memory: ``python -m benchmarks.peers_grpo VARIANT ...`` runs one variant alone in a fresh
process and prints the growth of its peak RSS (``VmHWM``) over two steps above the RSS after setup.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

#: the TRL release this benchmark is written against (docs/performance.md)
TRL_VERSION = "1.16.0"


def syngrpo_trainer(
    root: Path,
    policy_dir: Path,
    *,
    group: int,
    image_size: int,
    new_tokens: int,
    batch: int,
    lr: float = 1e-5,
    beta: float = 0.04,
    temperature: float = 1.0,
    algorithm: dict[str, Any] | None = None,
    engine_options: dict[str, Any] | None = None,
):
    """A set-up syngrpo Trainer for plain GRPO on the toy REC data under ``root``."""
    from syngrpo.config import TrainConfig
    from syngrpo.train.trainer import Trainer

    cfg = TrainConfig.model_validate(
        {
            "seed": 0,
            "model": {"policy": str(policy_dir), "dtype": "float32", "device": "cpu"},
            "data": {
                "task": "rec",
                "toy": {"n_train": 16, "n_eval": 2, "image_size": image_size, "seed": 0},
                "toy_dir": str(root / "data"),
            },
            "rollout": {
                "num_generations": group,
                "max_new_tokens": new_tokens,
                "temperature": temperature,
                "response_format": "plain",
                "engine_options": dict(engine_options or {}),
            },
            "algorithm": {"beta": beta, **(algorithm or {})},
            "synthesis": {"mode": "off"},
            "optim": {"lr": lr, "batch_size": batch, "max_steps": 1000},
            "sft": {"enabled": False},
            "eval": {"at_end": False},
            "logging": {"tensorboard": False, "plots": False, "gallery": False, "progress": False, "samples_every": 0},
        }
    )
    trainer = Trainer(cfg, root / "syngrpo-run")
    trainer.setup()
    return trainer


def trl_trainer(
    root: Path,
    policy_dir: Path,
    syn: Any,
    *,
    group: int,
    new_tokens: int,
    batch: int,
    max_steps: int,
    lr: float = 1e-5,
    beta: float = 0.04,
    temperature: float = 1.0,
    callbacks: list | None = None,
):
    """TRL's GRPOTrainer on the same checkpoint, prompts, images and rewards as the syngrpo trainer ``syn``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText
    from trl import GRPOConfig, GRPOTrainer

    from syngrpo.data.images import load_rgb
    from syngrpo.models.processing import load_processor
    from syngrpo.perception.response import parse_response
    from syngrpo.train.evaluate import build_prompts

    samples = list(syn.train_samples)
    texts = build_prompts(syn.task, samples, "plain")
    rows = [
        {
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
            "image": load_rgb(s.image),
            "sample_index": i,
        }
        for i, (s, t) in enumerate(zip(samples, texts, strict=True))
    ]

    def make_reward(term_key: str, fn: Any, weight: float):
        def reward(completions, sample_index, **_: Any) -> list[float]:
            parsed = [parse_response(c if isinstance(c, str) else c[0]["content"], "plain") for c in completions]
            rows_samples = [samples[int(i)] for i in sample_index]
            return [weight * float(v) for v in fn(parsed, rows_samples, task=syn.task, frames=None)]

        reward.__name__ = term_key
        return reward

    rewards = [make_reward(term.key, fn, term.weight) for term, fn in syn.rewards.terms]
    model = AutoModelForImageTextToText.from_pretrained(str(policy_dir), dtype=torch.float32)
    args = GRPOConfig(
        output_dir=str(root / "trl-run"),
        per_device_train_batch_size=batch * group,
        num_generations=group,
        max_completion_length=new_tokens,
        temperature=temperature,
        beta=beta,
        learning_rate=lr,
        lr_scheduler_type="constant",
        max_steps=max_steps,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        gradient_accumulation_steps=1,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_processor(policy_dir),
        callbacks=callbacks or [],
    )


class StepTimer:
    """Times TRL's steps and their rollout parts (wrapping two of its methods)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.parts = {"generate": 0.0, "generate_and_score": 0.0}
        for name, key in (("_generate", "generate"), ("_generate_and_score_completions", "generate_and_score")):
            real = getattr(trainer, name)

            def timed(*a: Any, _real: Any = real, _key: str = key, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return _real(*a, **k)
                finally:
                    self.parts[_key] += time.perf_counter() - t0

            setattr(trainer, name, timed)

    def reset(self) -> None:
        self.parts = dict.fromkeys(self.parts, 0.0)

    def tokens(self, rows: int) -> float:
        """Completion tokens of the last step (its mean completion length x ``rows``)."""
        lengths = self.trainer._metrics["train"]["completions/mean_length"]
        return float(lengths[-1]) * rows if lengths else 0.0


def syngrpo_step(trainer: Any, step: int) -> dict[str, float]:
    """One syngrpo step: total, rollout (generate), update seconds and completion tokens."""
    t0 = time.perf_counter()
    m = trainer.train_step(step)
    total = time.perf_counter() - t0
    trainer.step = step
    n_rows = trainer.cfg.optim.batch_size * trainer.cfg.rollout.num_generations
    return {
        "step": total,
        "rollout": float(m["time/rollout"]),
        "update": float(m["time/update"]),
        "tokens": float(m["completion/mean_length"]) * n_rows,
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    """This process's peak RSS (``VmHWM``).  Not ``ru_maxrss``: Linux carries the high-water mark of the
    process that forked across ``execve``, so a child of a big pytest process would report the parent's RSS."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")  # pragma: no cover - Linux only


def memory_main(argv: list[str]) -> None:
    """``VARIANT ROOT POLICY_DIR GROUP IMAGE_SIZE NEW_TOKENS BATCH``: peak-RSS (VmHWM) growth of two steps, as JSON."""
    import torch

    variant, root, policy_dir = argv[0], Path(argv[1]), Path(argv[2])
    group, image_size, new_tokens, batch = (int(v) for v in argv[3:7])
    torch.set_num_threads(1)
    syn = syngrpo_trainer(root, policy_dir, group=group, image_size=image_size, new_tokens=new_tokens, batch=batch)
    if variant == "syngrpo":
        base = _rss_bytes()
        for step in (1, 2):
            syngrpo_step(syn, step)
    else:
        from transformers import TrainerCallback

        marks: dict[str, int] = {}

        class Mark(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):  # after the optimizer and accelerator exist
                marks["base"] = _rss_bytes()

        syn.close()
        tr = trl_trainer(
            root, policy_dir, syn, group=group, new_tokens=new_tokens, batch=batch, max_steps=2, callbacks=[Mark()]
        )
        tr.train()
        base = marks["base"]
    peak = _peak_rss_bytes()
    print(json.dumps({"variant": variant, "peak_growth_bytes": peak - base, "peak_bytes": peak, "base_bytes": base}))


if __name__ == "__main__":
    memory_main(sys.argv[1:])
