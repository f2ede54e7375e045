"""The contract a perception task plugin fulfils.

A task knows its data (file formats, toy generator), its question, how to read
an answer, how to score it (the accuracy reward R_acc of paper eqs. 2-3), how
to evaluate a split, and how its labels move when the image is resized, padded,
cropped or pasted.  The trainer, the data server and the evaluator only talk to
tasks through this class, so a new task is one subclass in its own package,
registered under the ``syngrpo`` entry-point group with ``register_tasks``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.data.files import portable_image_path
from syngrpo.perception.geometry import ImageTransform
from syngrpo.types import Box, Sample

#: longest label a synthesis job carries (the data server's default ``max_label_chars``)
MAX_JOB_LABEL_CHARS = 200


class Task(abc.ABC):
    """Base class of every perception task.

    Subclasses set ``name`` and implement the abstract methods.  Every method
    that reads model output must never raise on any string: a malformed answer
    scores 0, it does not crash a training step.
    """

    name: ClassVar[str]
    #: the answer's form in one line, e.g. ``[x1, y1, x2, y2]``.  The core does **not** append it to the
    #: prompt: a task that wants the model to see it puts it in :meth:`question` (ISR and counting do);
    #: ``syngrpo.testing`` and the docs read it as the task's description of its answers
    answer_format: ClassVar[str] = ""

    # ---- data -------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, path: str | Path, *, image_root: str | Path | None = None) -> list[Sample]:
        """Read a dataset file of this task's own format into samples (image paths made absolute)."""

    @abc.abstractmethod
    def make_toy_dataset(self, out_dir: str | Path, *, n: int, seed: int, split: str = "train",
                         image_size: int = 112, **options: Any) -> list[Sample]:
        """Draw ``n`` procedural images with exact labels into ``out_dir`` (no download needed)."""

    def save(self, samples: Sequence[Sample], path: str | Path) -> None:
        """Write samples as JSONL in this task's own format (inverse of :meth:`load`)."""
        raise NotImplementedError(f"task {self.name!r} cannot save datasets")

    # ---- prompting and answers --------------------------------------------------------
    @abc.abstractmethod
    def question(self, sample: Sample) -> str:
        """The task part of the prompt (the core adds the response-format instructions)."""

    def answer_text(self, response: Any, *, whole_text_fallback: bool = False) -> str | None:
        """The part of a parsed completion (:class:`~syngrpo.types.ParsedResponse`) that
        :meth:`parse_answer` reads: by default the first ``<answer>`` block's content.

        ``whole_text_fallback`` (``syngrpo eval``) reads the whole completion when there is no
        answer block.  A task whose metric profile prescribes which block counts (REC/OVD
        ``profile: vlmr1``) overrides this and ignores the fallback.
        """
        answer = getattr(response, "answer", None)
        if answer is None and whole_text_fallback:
            return getattr(response, "text", None)
        return answer

    @abc.abstractmethod
    def parse_answer(self, text: str | None) -> Any | None:
        """The prediction inside ``<answer>``, or ``None`` when it cannot be read. Never raises."""

    @abc.abstractmethod
    def accuracy(self, prediction: Any | None, sample: Sample, *,
                 frame: ImageTransform | None = None) -> float:
        """R_acc in [0, 1] for one parsed prediction. Never raises.

        ``frame`` maps the original image to the model-input image: a prediction
        made in the model-input frame is mapped back with ``frame.inverse()``
        before it is compared with the label (which lives in the original frame).
        """

    @abc.abstractmethod
    def evaluate(self, predictions: Sequence[Any | None], samples: Sequence[Sample], *,
                 frames: Sequence[ImageTransform | None] | None = None) -> dict[str, float]:
        """Split-level metrics (REC: Acc@0.5; OVD/ISR: mAP, GP, GR ...), values in [0, 1].

        Put the task's main metric **first**: the trainer logs it as ``eval/score`` (the
        first key other than ``format``, ``accuracy_reward`` and ``n``) and plots it; every
        key is also logged as ``eval/<key>``.
        """

    def format_answer(self, solution: Any) -> str:
        """The label written as the model should answer (SFT targets, contract tests).

        The default is JSON; a task whose prompt asks for another form overrides it.
        """
        return json.dumps(solution)

    # ---- labels under image transforms -----------------------------------------------
    @abc.abstractmethod
    def foreground_boxes(self, sample: Sample) -> list[Box]:
        """The labelled regions that synthesis must keep pixel-exact."""

    def foreground_labels(self, sample: Sample) -> list[str]:
        """One short text label per :meth:`foreground_boxes` box: what the data server is told about each.

        Segmenters that take a text prompt and synthesizers that draw matching
        distractors read these.  The default: each object's ``label`` when the
        solution is a list of objects, one per box (OVD, ISR); else the question
        (REC: the referring expression), cut to :data:`MAX_JOB_LABEL_CHARS` (the data
        server refuses empty or longer labels by default).  Override it when neither
        fits, e.g. a counting task whose boxes are all one class.
        """
        n = len(self.foreground_boxes(sample))
        solution = sample.solution
        if isinstance(solution, list) and len(solution) == n and all(isinstance(o, dict) for o in solution):
            labels = [str(o.get("label", "")) for o in solution]
        else:
            labels = [sample.problem] * n
        return [(label.strip() or "object")[:MAX_JOB_LABEL_CHARS] for label in labels]

    @abc.abstractmethod
    def transform_solution(self, solution: Any, transform: ImageTransform) -> Any:
        """The label after the image went through ``transform`` (resize / pad / crop / paste)."""

    def transform_sample(self, sample: Sample, transform: ImageTransform, image_path: str) -> Sample:
        """A copy of ``sample`` whose image is ``image_path`` (already transformed)."""
        return sample.evolve(
            image=image_path,
            solution=self.transform_solution(sample.solution, transform),
            width=transform.width,
            height=transform.height,
        )

    def class_names(self) -> list[str]:
        """Object classes this task knows (synthesizers draw them as distractors)."""
        return []

    # ---- reading results --------------------------------------------------------------
    #: how the run summary and the study name each row of :meth:`chance_baselines` (printed after
    #: ``chance:``); a row without a label prints its name
    chance_baseline_labels: ClassVar[dict[str, str]] = {}

    def chance_baselines(self, eval_samples: Sequence[Sample], train_samples: Sequence[Sample]) -> dict[str, float]:
        """Scores of answers that need no model, on ``eval_samples``: a floor to read results against.

        ``{name: score}`` in the task's main metric (the first key of :meth:`evaluate`), e.g. REC's
        "always the train split's commonest box".  The end-of-run summary prints them beside the
        evaluation before and after RL, and its verdict says whether the warm start beat the best of
        them; the CPU study prints them beside its table.  ``{}`` (the default) when the task has none
        or the samples do not allow them.  Cheap: called once per run, on the main process.
        """
        return {}


# ---- helpers every task needs in the same form --------------------------------------------


def original_frame(sample: Sample, frame: ImageTransform | None) -> ImageTransform:
    """The map from the model-input image back to ``sample``'s original image.

    ``frame`` maps the original image to what the model saw (``None``: it saw the
    original).  The result's frame is the original image, so ``.box()`` clips a
    predicted box to it.  Raises ``ValueError`` for a frame with no inverse (a zero
    scale); callers that must never raise score such a prediction 0.
    """
    if frame is None:
        return ImageTransform.identity(sample.width, sample.height)
    return frame.inverse(sample.width, sample.height)


def split_frames(predictions: Sequence[Any], samples: Sequence[Sample],
                 frames: Sequence[ImageTransform | None] | None) -> list[ImageTransform | None]:
    """One frame per sample for :meth:`Task.evaluate` (``None`` each when not given); checks the lengths."""
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
    if frames is None:
        return [None] * len(samples)
    if len(frames) != len(samples):
        raise ValueError(f"{len(frames)} frames for {len(samples)} samples")
    return list(frames)


def sample_record(sample: Sample, data_file: str | Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The record :meth:`Task.save` writes for ``sample`` into ``data_file``.

    ``id``, the image path (relative to the data file where it can be,
    :func:`syngrpo.data.files.portable_image_path`; a sample with several images writes the list of them
    in prompt order and ``box_image``, the index of the one its label is in), the task's own ``fields``
    (question, label), ``width``/``height``, the provenance of a synthesized sample
    (``source_id``, ``generation``, ``description``, only when set), then the keys of
    ``meta`` that none of these already uses, so a loader that sends unknown keys to
    ``meta`` reads the record back unchanged.
    """
    image: Any = portable_image_path(sample.image, data_file)
    if sample.other_images:  # several images: the list in prompt order, and which one the label is in
        image = [portable_image_path(p, data_file) for p in sample.images]
    record: dict[str, Any] = {"id": sample.id, "image": image, **fields,
                              "width": sample.width, "height": sample.height}
    if sample.other_images:
        record["box_image"] = sample.box_image
    if sample.source_id is not None:
        record["source_id"] = sample.source_id
    if sample.generation:
        record["generation"] = sample.generation
    if sample.description is not None:
        record["description"] = sample.description
    for key, value in sample.meta.items():
        record.setdefault(key, value)
    return record
