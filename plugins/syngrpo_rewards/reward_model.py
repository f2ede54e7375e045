"""The ``reward_model`` reward: a sequence-classification model scores each completion.

The text scored is the sample's prompt followed by the completion (``input: prompt_completion``), as TRL's
GRPOTrainer does for a reward model given by id (trl/trainer/grpo_trainer.py: prompt + completion, or the
reward tokenizer's chat template for conversations, then ``logits[:, 0]``).  Here:

* ``input``: ``prompt_completion`` (default), ``completion`` or ``answer`` (only the parsed ``<answer>``);
* ``chat_template``: ``auto`` (default) renders ``[user: prompt, assistant: completion]`` with the reward
  tokenizer's chat template when it has one, ``never`` concatenates the raw texts;
* ``label``: which logit column is the reward (0, TRL's choice; a two-class "good/bad" head wants 1);
* ``transform``: ``none`` (the raw logit) or ``sigmoid`` (a value in (0, 1), the scale of the built-ins);
* ``device`` / ``dtype``: where the judge runs, e.g. ``cuda:1`` to keep it off the policy's GPU.

The model is loaded (and its device checked) when the reward is built, so a wrong path or device stops the run
before the first rollout; it runs in eval mode under ``torch.inference_mode`` and never trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from syngrpo.errors import ConfigError
from syngrpo.types import ParsedResponse, Sample

if TYPE_CHECKING:  # pragma: no cover
    from syngrpo.perception.geometry import ImageTransform
    from syngrpo.perception.task import Task

_INPUTS = ("prompt_completion", "completion", "answer")
_TEMPLATES = ("auto", "never")
_TRANSFORMS = ("none", "sigmoid")
_DTYPES = ("float32", "bfloat16", "float16")


class RewardModelReward:
    """Scores responses with a local ``AutoModelForSequenceClassification`` (see the module docstring)."""

    name = "reward_model"

    def __init__(self, *, model: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 16,
                 max_length: int = 2048, input: str = "prompt_completion", chat_template: str = "auto",
                 label: int = 0, transform: str = "none") -> None:
        for option, value, allowed in (("input", input, _INPUTS), ("chat_template", chat_template, _TEMPLATES),
                                       ("transform", transform, _TRANSFORMS), ("dtype", dtype, _DTYPES)):
            if value not in allowed:
                raise ConfigError(f"reward_model: {option} must be one of {list(allowed)}, got {value!r}")
        if batch_size < 1 or max_length < 1:
            raise ConfigError("reward_model: batch_size and max_length must be >= 1")
        import torch
        import transformers
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"reward_model: {str(path)!r} is not a saved model directory (no config.json); "
                              "give the directory written by save_pretrained (models are not downloaded)")
        try:
            self.device = torch.device(device)
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise ConfigError(f"reward_model: device {device!r} is not usable here ({exc}); "
                              "use 'cpu' or a visible accelerator such as 'cuda:1'") from exc
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=getattr(torch, dtype)).to(self.device).eval()
        self.model.requires_grad_(False)
        if not 0 <= label < self.model.config.num_labels:
            raise ConfigError(f"reward_model: label {label} is outside the model's {self.model.config.num_labels} "
                              f"logits ({path})")
        if self.tokenizer.pad_token is None:  # many reward models ship without one; any id works with the mask
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.path = str(path)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.input = input
        self.use_template = chat_template == "auto" and bool(getattr(self.tokenizer, "chat_template", None))
        self.label = int(label)
        self.transform = transform

    def text(self, response: ParsedResponse, sample: Sample) -> str:
        """The text the judge reads for one response (public for tests and debugging)."""
        completion = (response.answer or "") if self.input == "answer" else response.text
        if self.input != "prompt_completion":
            return completion
        prompt = getattr(sample, "problem", "") or ""
        if self.use_template:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return prompt + completion

    def __call__(self, responses: Sequence[ParsedResponse], samples: Sequence[Sample], *, task: Task,
                 frames: Sequence[ImageTransform | None] | None = None) -> list[float]:
        import torch

        if len(responses) != len(samples):
            raise ValueError(f"{len(responses)} responses but {len(samples)} samples: pass the sample of every response")
        texts = [self.text(r, s) for r, s in zip(responses, samples, strict=True)]
        values: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_length,
                                       add_special_tokens=not self.use_template)
                logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits  # (B, num_labels)
                scores = logits[:, self.label].float()
                if self.transform == "sigmoid":
                    scores = torch.sigmoid(scores)
                values.extend(scores.cpu().tolist())
        return values
