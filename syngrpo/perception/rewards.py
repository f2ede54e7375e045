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
through smoothing), so the trainer computes it with :mod:`syngrpo.algo.diversity`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from syngrpo.perception.response import format_reward
from syngrpo.types import ParsedResponse, Sample

if TYPE_CHECKING:  # pragma: no cover
    from syngrpo.perception.geometry import ImageTransform
    from syngrpo.perception.task import Task


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


class PerResponseReward:
    """Base of rewards that score each response on its own: checks the batch, then calls :meth:`score`.

    Subclasses implement ``score(response, sample, *, task, frame) -> float``.
    """

    name = "per_response"

    def __call__(
        self,
        responses: Sequence[ParsedResponse],
        samples: Sequence[Sample],
        *,
        task: Task,
        frames: Sequence[ImageTransform | None] | None = None,
    ) -> list[float]:
        if len(responses) != len(samples):
            raise ValueError(f"{len(responses)} responses but {len(samples)} samples: pass the sample of every response")
        if frames is not None and len(frames) != len(responses):
            raise ValueError(f"{len(frames)} frames for {len(responses)} responses: pass one frame (or None) each")
        each_frame = frames if frames is not None else [None] * len(responses)
        values = []
        for response, sample, frame in zip(responses, samples, each_frame, strict=True):
            values.append(self.score(response, sample, task=task, frame=frame))
        return values

    def score(self, response: ParsedResponse, sample: Sample, *, task: Task, frame: ImageTransform | None) -> float:
        raise NotImplementedError  # pragma: no cover - abstract


def _zero_with_warning(task: Task, sample: Sample, what: str) -> float:
    """0.0, with a :class:`RewardWarning` that points at the code that called the reward."""
    warnings.warn(
        f"task {getattr(task, 'name', type(task).__name__)!r} {what} on sample "
        f"{getattr(sample, 'id', '?')!r}; accuracy reward set to 0",
        RewardWarning,
        stacklevel=4,  # here, score, __call__, the caller
    )
    return 0.0


class AccuracyReward(PerResponseReward):
    """R_acc: the task's own accuracy of the parsed ``<answer>`` (REC: IoU, eq. 2; OVD/ISR: eq. 3), in [0, 1].

    Calls ``task.accuracy(task.parse_answer(task.answer_text(response)), sample, frame=frame)``.
    A task that raises anyway, or returns a non-finite number, scores 0 for that
    response with a :class:`RewardWarning`; values are clipped to [0, 1].

    A task may also offer ``accuracy_group(predictions, sample, *, frame) -> list[float]``,
    the accuracy of several predictions of one sample at once (OVD: one COCO AP pass for a
    whole GRPO group, which shares the ground truth).  Runs of consecutive responses to the
    same sample object with equal frames then go through it in one call; the values must
    equal ``accuracy``'s, and if the call raises, the run is scored one by one.
    """

    name = "accuracy"

    def __call__(self, responses: Sequence[ParsedResponse], samples: Sequence[Sample], *, task: Task,
                 frames: Sequence[ImageTransform | None] | None = None) -> list[float]:
        group_fn = getattr(task, "accuracy_group", None)
        if group_fn is None or len(responses) != len(samples) or (frames is not None and len(frames) != len(responses)):
            return super().__call__(responses, samples, task=task, frames=frames)
        each_frame = list(frames) if frames is not None else [None] * len(responses)
        values: list[float] = []
        start = 0
        while start < len(responses):
            end = start + 1
            while end < len(responses) and samples[end] is samples[start] and each_frame[end] == each_frame[start]:
                end += 1
            values.extend(self._score_run(group_fn, responses[start:end], samples[start], each_frame[start],
                                          task=task))
            start = end
        return values

    def _score_run(self, group_fn: Callable[..., Sequence[float]], responses: Sequence[ParsedResponse],
                   sample: Sample, frame: ImageTransform | None, *, task: Task) -> list[float]:
        """One ``accuracy_group`` call for responses to one sample; one by one when it fails."""
        if len(responses) > 1:
            try:
                predictions = [task.parse_answer(task.answer_text(r)) for r in responses]
                raw = [float(v) for v in group_fn(predictions, sample, frame=frame)]
            except Exception:  # noqa: BLE001 - scored one by one below, where each failure is warned about
                raw = None
            if raw is not None and len(raw) == len(responses) and all(math.isfinite(v) for v in raw):
                return [min(1.0, max(0.0, v)) for v in raw]
        return [self.score(r, sample, task=task, frame=frame) for r in responses]

    def score(self, response: ParsedResponse, sample: Sample, *, task: Task, frame: ImageTransform | None) -> float:
        try:
            prediction = task.parse_answer(task.answer_text(response))
            value = float(task.accuracy(prediction, sample, frame=frame))
        except Exception as exc:  # a reward never crashes a step
            return _zero_with_warning(task, sample, f"raised {type(exc).__name__}: {exc}")
        if not math.isfinite(value):
            return _zero_with_warning(task, sample, f"returned accuracy {value!r}")
        return min(1.0, max(0.0, value))


class FormatReward(PerResponseReward):
    """R_format: 1.0 for a well-formed response (every tag the prompt asked for, in order), else 0.0."""

    name = "format"

    def score(self, response: ParsedResponse, sample: Sample, *, task: Task, frame: ImageTransform | None) -> float:
        return format_reward(response)


class ReferencedReward:
    """A reward function given by reference (``path/to/file.py:function``) instead of a registered name.

    The function has the reward signature ``fn(responses, samples, *, task, frames=None, **options)``
    and returns one number per response.  The check of its signature happens when the run starts, and
    every call's result is checked (length, finite numbers), so a bug in the function fails the step
    that met it with a message that names the function, instead of training on wrong rewards.
    """

    def __init__(self, ref: str, fn: Callable[..., Sequence[float]], options: dict[str, Any]) -> None:
        self.ref = ref
        self.fn = fn
        self.options = dict(options)
        self.name = getattr(fn, "__name__", ref)
        _check_reward_signature(ref, fn, self.options)

    def __call__(self, responses: Sequence[ParsedResponse], samples: Sequence[Sample], *, task: Task,
                 frames: Sequence[ImageTransform | None] | None = None) -> list[float]:
        values = self.fn(responses, samples, task=task, frames=frames, **self.options)
        try:
            out = [float(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"reward {self.ref!r} must return one number per response; got {values!r:.200}") from exc
        if len(out) != len(responses):
            raise ValueError(f"reward {self.ref!r} returned {len(out)} values for {len(responses)} responses")
        bad = [v for v in out if not math.isfinite(v)]
        if bad:
            raise ValueError(f"reward {self.ref!r} returned non-finite values {bad[:3]}")
        return out


def _check_reward_signature(ref: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    """Raise :class:`~syngrpo.errors.ConfigError` unless ``fn`` takes the reward call as the trainer makes it."""
    import inspect

    from syngrpo.errors import ConfigError

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        sig.bind([], [], task=None, frames=None, **options)
    except TypeError as exc:
        raise ConfigError(
            f"reward {ref!r}: its signature {sig} cannot take the reward call "
            f"fn(responses, samples, *, task, frames=None{''.join(', ' + k + '=...' for k in options)}): {exc}"
        ) from exc


def make_reward(registry: Any, name: str, options: dict[str, Any]) -> Callable[..., list[float]]:
    """The reward a config's term names: a registered one, or a ``file.py:function`` reference."""
    from syngrpo.plugins import is_callable_ref, load_callable

    if is_callable_ref(name):
        return ReferencedReward(name, load_callable(name), options)
    return registry.create("rewards", name, **options)
