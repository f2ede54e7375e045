"""REC benchmarks of Table 1 (RefCOCO/+/g val, LISA-Grounding test) with VLM-R1's evaluation protocol.

The paper follows VLM-R1 (its ``src/eval/test_rec_r1.py``, commit 90052f4), whose rules are restated
here, not copied:

* the subset: Python's ``random`` seeded with 42 shuffles the whole split, the first 2,000 records count;
* decoding: greedy, ``max_new_tokens`` 256, two prompts per batch;
* reading: the **first** ``<answer>...</answer>`` block, stripped; in it the pattern
  ``{ ... [x1, y1, x2, y2] ... }`` (integers only, inside braces: the JSON the question asks for);
  no block or no match is the box ``[0, 0, 0, 0]``;
* the frame: each coordinate divided by the model-input size and multiplied by the image's
  (``x / input_w * image_w``); here the input size is the family's answer frame
  (``grid x patch`` pixels for Qwen2.5-VL, as VLM-R1; 1000 for the 0-1000 families), nothing clipped;
* the metric: VLM-R1's IoU (inclusive pixels: far corners - 1, sizes + 1; union from the plain areas),
  and a sample is correct when it is **strictly above 0.5**.

The question can be the run's (``--prompt run``: the task's question and the run's response format,
what a syngrpo-trained policy saw) or VLM-R1's (``--prompt vlmr1``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from syngrpo.perception.benchmark import Benchmark, BenchmarkScore, PaperCell, Protocol
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.vlmr1 import answer_blocks, rec_box, rec_iou
from syngrpo.types import Sample
from tasks_rec.formats import VLMR1_QUESTION
from tasks_rec.task import VERBATIM_FLAG

#: VLM-R1's REC evaluation question (its test_rec_r1.py)
VLMR1_EVAL_TEMPLATE = ("{Question} First output the thinking process in <think> </think> tags and then output the "
                       "final answer in <answer> </answer> tags. Output the final answer in JSON format.")
#: VLM-R1's evaluation pattern: an integer box inside braces (``re.DOTALL``)
_JSON_BOX = re.compile(r"\{.*\[(\d+),\s*(\d+),\s*(\d+),\s*(\d+)]\s*.*\}", re.DOTALL)
#: the box VLM-R1 scores when it finds none
MISS = (0, 0, 0, 0)

PROTOCOL = Protocol(subset=2000, seed=42, subset_rule="shuffled_head", batch_size=2, max_new_tokens=256)

#: Table 1 of the paper, per column: row -> Acc@0.5 in percent (N/A cells left out)
_ROWS = ("Original", "Visionary-R1", "SATORI-R1", "Rex-Thinker", "SFT", "VLM-R1", "GRPO", "GRPO + Entropy Loss",
         "GRPO + Entropy Adv.", "GRPO + Offline Generation", "Syn-GRPO (w/o Rdiversity)", "Syn-GRPO")
_TABLE1 = {  # column -> (3B values, 7B values), in _ROWS order; None = N/A
    "LISA": ((56.51, 60.80, 58.38, None, 54.82, 63.14, 62.24, 64.23, 63.69, 64.23, 64.60, 68.28),
             (61.34, None, None, 67.49, 63.27, 66.71, 65.26, 66.59, 67.25, 66.95, 67.67, 70.14)),
    "RefCOCO": ((88.70, 86.85, 85.80, None, 88.70, 90.55, 89.40, 90.20, 90.90, 91.10, 91.35, 92.15),
                (90.00, None, None, 91.20, 89.10, 92.60, 91.90, 91.40, 92.05, 91.80, 92.75, 93.55)),
    "RefCOCO+": ((81.95, 82.65, 82.20, None, 82.25, 84.30, 84.10, 82.55, 83.85, 83.40, 83.85, 85.30),
                 (84.20, None, None, 86.35, 85.95, 89.40, 89.85, 87.65, 88.30, 89.85, 89.50, 90.65)),
    "RefCOCOg": ((86.05, 86.50, 85.25, None, 85.95, 87.10, 86.60, 85.60, 86.40, 86.30, 85.85, 87.45),
                 (87.20, None, None, 87.80, 86.65, 89.00, 87.80, 87.95, 87.30, 88.55, 88.75, 89.25)),
}


def _cell(column: str) -> PaperCell:
    values = {}
    for model, row_values in zip(("Qwen2.5-VL-3B", "Qwen2.5-VL-7B"), _TABLE1[column], strict=True):
        values.update({f"{model} / {row}": v for row, v in zip(_ROWS, row_values, strict=True) if v is not None})
    return PaperCell("Table 1", column, "acc@0.5", values)


def eval_box(text: str | None) -> tuple[int, int, int, int] | None:
    """The box VLM-R1's evaluation reads from a completion, or ``None`` (it then scores ``[0, 0, 0, 0]``)."""
    blocks = answer_blocks(text)
    if not blocks:
        return None
    match = _JSON_BOX.search(blocks[0])
    return None if match is None else tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def rescale(box: Sequence[float], frame: ImageTransform, width: int, height: int) -> list[float]:
    """A box from the answer frame to the original image as VLM-R1 does it: ``x / input_w * image_w``.

    ``frame`` maps the original image to the answer frame; a pure resize (every family's) is
    undone with VLM-R1's arithmetic, to the last bit; a frame with an offset (a padded input) by its inverse.
    """
    if frame.tx == 0 and frame.ty == 0 and frame.width > 0 and frame.height > 0:
        iw, ih = frame.width, frame.height
        return [box[0] / iw * width, box[1] / ih * height, box[2] / iw * width, box[3] / ih * height]
    back = frame.inverse(width, height)
    x1, y1 = back.point(box[0], box[1])
    x2, y2 = back.point(box[2], box[3])
    return [x1, y1, x2, y2]


class VlmR1RecBenchmark(Benchmark):
    """A Table 1 column: VLM-R1's REC evaluation on a prepared split."""

    prompt_styles: ClassVar[tuple[str, ...]] = ("run", "vlmr1")

    def prompt(self, task: Any, sample: Sample, *, response_mode: str, style: str = "run") -> str:
        """``run``: the task's question in the run's response format; ``vlmr1``: VLM-R1's evaluation question."""
        if style != "vlmr1":
            return super().prompt(task, sample, response_mode=response_mode, style=style)
        if sample.meta.get(VERBATIM_FLAG):
            question = sample.problem
        else:
            question = sample.meta.get("problem") or VLMR1_QUESTION.format(expression=sample.problem.strip())
        return VLMR1_EVAL_TEMPLATE.format(Question=question)

    def score(self, task: Any, completions: Sequence[str], samples: Sequence[Sample],
              frames: Sequence[ImageTransform], *, response_mode: str) -> BenchmarkScore:
        records, correct, total_iou, misses, unbraced = [], 0, 0.0, 0, 0
        for sample, text, frame in zip(samples, completions, frames, strict=True):
            box = eval_box(text)
            if box is None:
                misses += 1
                blocks = answer_blocks(text)
                unbraced += bool(blocks and rec_box(blocks[0]) is not None)
            resized = rescale(box or MISS, frame, sample.width, sample.height)
            value = rec_iou(resized, [float(v) for v in sample.solution])
            hit = value > 0.5
            correct += hit
            total_iou += value
            records.append({
                "id": sample.id, "image": sample.image, "question": sample.meta.get("problem") or sample.problem,
                "ground_truth": [float(v) for v in sample.solution], "model_output": text,
                "input_size": [frame.height, frame.width], "image_size": [sample.height, sample.width],
                "extracted_answer": resized, "iou": value, "correct": int(hit),
            })
        n = len(records)
        metrics = {"acc@0.5": correct / n if n else 0.0, "mean_iou": total_iou / n if n else 0.0,
                   "no_box": misses / n if n else 0.0, "box_without_braces": unbraced / n if n else 0.0,
                   "n": float(n)}
        return BenchmarkScore(metrics=metrics, records=records)


def _make(name: str, dataset: str, split: str, column: str, what: str) -> VlmR1RecBenchmark:
    return VlmR1RecBenchmark(
        name=name, task="rec", task_options={"profile": "vlmr1"}, dataset=dataset, split=split, protocol=PROTOCOL,
        paper=[_cell(column)], metrics=("acc@0.5", "mean_iou", "no_box"),
        description=f"{what}: VLM-R1's REC evaluation (Table 1, column {column})")


BENCHMARKS = {
    "refcoco_val": lambda: _make("refcoco_val", "refcoco", "val", "RefCOCO", "RefCOCO val"),
    "refcocop_val": lambda: _make("refcocop_val", "refcocop", "val", "RefCOCO+", "RefCOCO+ val"),
    "refcocog_val": lambda: _make("refcocog_val", "refcocog", "val", "RefCOCOg", "RefCOCOg val"),
    "lisa_test": lambda: _make("lisa_test", "lisa", "test", "LISA", "LISA-Grounding test"),
}
