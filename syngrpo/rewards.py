"""Per-response reward functions (the ``rewards`` plugin kind) and the two built-ins.

A reward function scores a batch of parsed responses, one number each::

    reward(responses, samples, *, task, frames=None) -> list[float]

``responses[i]`` answers ``samples[i]`` (the trainer repeats each sample G times),
``frames[i]`` maps that sample's original image to the image the model saw
(``None``: the same frame).  A reward function is a pure function of its
inputs and must never raise on a malformed response: a bad answer scores low,
it does not crash a training step.

The built-ins are R_acc and R_format of eq. 7.  The third part, R_diversity
(eq. 6), is not a reward function: it compares each response's predicted
diversity with a statistic of its whole group of G rollouts (and of the batch,
through smoothing), so the trainer computes it with :mod:`syngrpo.diversity`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from syngrpo.response import format_reward
from syngrpo.types import ParsedResponse, Sample

if TYPE_CHECKING:  # pragma: no cover
    from syngrpo.geometry import ImageTransform
    from syngrpo.task import Task


class RewardWarning(RuntimeWarning):
    """A reward could not be computed for one response and was set to 0."""


@runtime_checkable
class RewardFunction(Protocol):
    """Scores responses: ``(responses, samples, *, task, frames=None) -> list[float]`` (one per response)."""

    def __call__(
        self,
        responses: Sequence[ParsedResponse],
        samples: Sequence[Sample],
        *,
        task: Task,
        frames: Sequence[ImageTransform | None] | None = None,
    ) -> list[float]: ...


def _check_lengths(responses: Sequence[object], samples: Sequence[object], frames: Sequence[object] | None) -> None:
    if len(responses) != len(samples):
        raise ValueError(f"{len(responses)} responses but {len(samples)} samples: pass the sample of every response")
    if frames is not None and len(frames) != len(responses):
        raise ValueError(f"{len(frames)} frames for {len(responses)} responses: pass one frame (or None) each")


class AccuracyReward:
    """R_acc: the task's own accuracy of the parsed ``<answer>`` (REC: IoU, eq. 2; OVD/ISR: eq. 3), in [0, 1].

    Calls ``task.accuracy(task.parse_answer(response.answer), sample, frame=frame)``.
    A task that raises anyway, or returns a non-finite number, scores 0 for that
    response with a :class:`RewardWarning`; values are clipped to [0, 1].
    """

    name = "accuracy"

    def __call__(
        self,
        responses: Sequence[ParsedResponse],
        samples: Sequence[Sample],
        *,
        task: Task,
        frames: Sequence[ImageTransform | None] | None = None,
    ) -> list[float]:
        _check_lengths(responses, samples, frames)
        out: list[float] = []
        for i, (response, sample) in enumerate(zip(responses, samples, strict=True)):
            frame = frames[i] if frames is not None else None
            try:
                prediction = task.parse_answer(response.answer)
                value = float(task.accuracy(prediction, sample, frame=frame))
            except Exception as exc:  # a reward never crashes a step
                warnings.warn(
                    f"task {getattr(task, 'name', type(task).__name__)!r} raised {type(exc).__name__}: {exc} "
                    f"while scoring sample {getattr(sample, 'id', '?')!r}; accuracy reward set to 0",
                    RewardWarning,
                    stacklevel=2,
                )
                value = 0.0
            if not math.isfinite(value):
                warnings.warn(
                    f"task {getattr(task, 'name', type(task).__name__)!r} returned accuracy {value!r} for sample "
                    f"{getattr(sample, 'id', '?')!r}; accuracy reward set to 0",
                    RewardWarning,
                    stacklevel=2,
                )
                value = 0.0
            out.append(min(1.0, max(0.0, value)))
        return out


class FormatReward:
    """R_format: 1.0 for a well-formed response (every tag the prompt asked for, in order), else 0.0."""

    name = "format"

    def __call__(
        self,
        responses: Sequence[ParsedResponse],
        samples: Sequence[Sample],
        *,
        task: Task,
        frames: Sequence[ImageTransform | None] | None = None,
    ) -> list[float]:
        _check_lengths(responses, samples, frames)
        return [format_reward(r) for r in responses]
