"""The ``Benchmark`` contract: a published evaluation protocol, reproducible by name.

A number in the paper's Tables 1-3 is not only a metric: it is a split, a subset of it drawn with
a seed, a decoding setting, a rule for reading the answer, a metric with its boundary conventions
(IoU *strictly* above 0.5) and a coordinate frame.  A benchmark (a plugin: ``register_benchmarks``,
docs/hooks/benchmarks.md) holds all of them, so ``syngrpo eval --benchmark refcoco_val`` computes
the number the way it was published.  The runner (``syngrpo.train.benchmark``) only decodes: it
loads the split, asks :meth:`Benchmark.select` for the subset, decodes greedily in the model
family's frame and hands the completions to :meth:`Benchmark.score`.

Frames: ``frames[i]`` maps sample ``i``'s original image to the frame its family answers in
(absolute pixels of the resized image for Qwen2.5-VL, 0-1000 for Qwen2-VL / Qwen3-VL / GLM-4.1V);
a score maps predictions back with it, so one benchmark serves every family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from syngrpo.data.subsets import random_sample, shuffled_head
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import build_instruction, parse_response
from syngrpo.types import Sample

SubsetRule = Literal["shuffled_head", "random_sample", "all"]


@dataclass(frozen=True)
class PaperCell:
    """Where a benchmark's number sits in the paper, and the values printed there (percent)."""

    #: ``"Table 1"``, ``"Table 2"``, ``"Table 3"``
    table: str
    #: the column the benchmark fills (``"RefCOCO"``, ``"mAP"``)
    column: str
    #: the metric key of :meth:`Benchmark.score` that the column reports (``"acc@0.5"``, ``"map"``)
    metric: str
    #: printed values: row (``"Qwen2.5-VL-3B / Syn-GRPO"``) -> value in percent
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    """How the published number was computed, besides the metric: subset, seed, decoding."""

    #: records evaluated (``None``: the whole split)
    subset: int | None = None
    seed: int = 42
    #: ``shuffled_head``: shuffle with the seed, keep the first ``subset`` (VLM-R1's eval);
    #: ``random_sample``: ``random.Random(seed).sample``; ``all``: the split as it is
    subset_rule: SubsetRule = "shuffled_head"
    #: prompts per ``generate`` call (left padding changes nothing under greedy decoding, but it is the protocol)
    batch_size: int = 2
    max_new_tokens: int = 256
    #: always greedy: ``temperature 0``, one completion per prompt
    decoding: str = "greedy"


@dataclass
class BenchmarkScore:
    """Split-level metrics and one record per sample (the predictions JSON)."""

    metrics: dict[str, float]
    records: list[dict[str, Any]]


class Benchmark:
    """One published protocol on one prepared split.  Subclass it where the score differs from the task's.

    The default :meth:`score` reads each completion with the task (its answer block, its parser, its
    metric profile) and returns the task's own :meth:`~syngrpo.perception.task.Task.evaluate`;
    REC's VLM-R1 protocol overrides it with VLM-R1's evaluation rules (``tasks_rec.benchmarks``).
    """

    #: what ``syngrpo eval --prompt`` may ask for; ``run`` = the task's question + the run's response format
    prompt_styles: ClassVar[tuple[str, ...]] = ("run",)

    def __init__(self, *, name: str, task: str, dataset: str, split: str, protocol: Protocol,
                 task_options: Mapping[str, Any] | None = None, paper: Sequence[PaperCell] = (),
                 metrics: Sequence[str] = (), description: str = "") -> None:
        self.name = name
        self.task = task
        self.task_options = dict(task_options or {})
        #: where ``syngrpo data prepare`` lays the split out: ``<data>/<dataset>/<split>.jsonl``
        self.dataset = dataset
        self.split = split
        self.protocol = protocol
        self.paper = tuple(paper)
        #: the metric keys a results table shows, main one first
        self.metrics = tuple(metrics) or tuple(c.metric for c in self.paper)
        self.description = description

    def data_file(self, data_root: str) -> str:
        """The prepared split under ``data_root`` (``syngrpo data prepare`` writes it)."""
        return f"{data_root.rstrip('/')}/{self.dataset}/{self.split}.jsonl"

    def select(self, samples: Sequence[Sample], *, limit: int | None = None) -> list[Sample]:
        """The protocol's subset (``limit`` caps it further, for smoke runs; the report says so)."""
        p = self.protocol
        if p.subset_rule == "shuffled_head":
            chosen = shuffled_head(samples, p.subset, p.seed)
        elif p.subset_rule == "random_sample" and p.subset is not None:
            chosen = random_sample(samples, p.subset, p.seed)
        else:
            chosen = list(samples)
        return chosen if limit is None else chosen[:limit]

    def prompt(self, task: Any, sample: Sample, *, response_mode: str, style: str = "run") -> str:
        """The text prompt of one sample (``style`` one of :attr:`prompt_styles`)."""
        return build_instruction(task.question(sample), response_mode)  # type: ignore[arg-type]

    def score(self, task: Any, completions: Sequence[str], samples: Sequence[Sample],
              frames: Sequence[ImageTransform], *, response_mode: str) -> BenchmarkScore:
        """The task's own reading and metrics (its profile's parser, :meth:`Task.evaluate`)."""
        predictions, records = [], []
        for sample, text, frame in zip(samples, completions, frames, strict=True):
            parsed = parse_response(text, response_mode)  # type: ignore[arg-type]
            prediction = task.parse_answer(task.answer_text(parsed))
            predictions.append(prediction)
            records.append({"id": sample.id, "image": sample.image, "question": task.question(sample),
                            "ground_truth": sample.solution, "model_output": text,
                            "prediction": _plain(prediction), "accuracy": float(task.accuracy(prediction, sample,
                                                                                             frame=frame))})
        metrics = {k: float(v) for k, v in task.evaluate(predictions, list(samples), frames=list(frames)).items()}
        metrics["n"] = float(len(records))
        return BenchmarkScore(metrics=metrics, records=records)


def _plain(value: Any) -> Any:
    """JSON-ready predictions (tuples become lists; anything else its repr)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
