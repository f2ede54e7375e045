"""Per-response reward functions (the ``rewards`` plugin kind) and the two built-ins.

A reward function scores a batch of parsed responses, one number each::

    reward(responses, samples, *, task, frames=None) -> list[float]

``responses[i]`` answers ``samples[i]`` (the trainer repeats each sample G times),
``frames[i]`` maps that sample's original image to the image the model saw
(``None``: the same frame).  A reward function is a pure function of its
inputs and must never raise on a malformed response: a bad answer scores low,
it does not crash a training step.

A function written for TRL's ``GRPOTrainer`` or VLM-R1 (``def iou_reward(completions, solution,
**kwargs)``) is called as they call it, through :class:`ColumnsReward`; a verl ``compute_score(data_source,
solution_str, ground_truth, extra_info=None)`` through :class:`VerlReward`.

The built-ins are R_acc and R_format of eq. 7.  The third part, R_diversity
(eq. 6), is not a reward function: it compares each response's predicted
diversity with a statistic of its whole group of G rollouts (and of the batch,
through smoothing), so the trainer computes it with :mod:`syngrpo.algo.diversity`.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
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
    equal ``accuracy``'s, and if the call raises, the run is scored one by one.  A task may further
    offer ``accuracy_batch(groups) -> list[list[float]]``, ``groups`` being ``(predictions, sample,
    frame)`` per run: every run of the batch in one call (OVD: one AP pass per batch); a run it
    scores badly (wrong length, non-finite) goes through ``accuracy_group``, and so does every run
    if the call raises.
    """

    name = "accuracy"

    def __call__(self, responses: Sequence[ParsedResponse], samples: Sequence[Sample], *, task: Task,
                 frames: Sequence[ImageTransform | None] | None = None) -> list[float]:
        group_fn = getattr(task, "accuracy_group", None)
        if group_fn is None or len(responses) != len(samples) or (frames is not None and len(frames) != len(responses)):
            return super().__call__(responses, samples, task=task, frames=frames)
        each_frame = list(frames) if frames is not None else [None] * len(responses)
        runs = []  # (start, end) of each run of responses to one sample with one frame
        start = 0
        while start < len(responses):
            end = start + 1
            while end < len(responses) and samples[end] is samples[start] and each_frame[end] == each_frame[start]:
                end += 1
            runs.append((start, end))
            start = end
        batch = self._score_batch(getattr(task, "accuracy_batch", None), runs, responses, samples, each_frame,
                                  task=task)
        values: list[float] = []
        for (start, end), done in zip(runs, batch, strict=True):
            values.extend(done if done is not None else self._score_run(
                group_fn, responses[start:end], samples[start], each_frame[start], task=task))
        return values

    def _score_batch(self, batch_fn: Callable[..., Sequence[Sequence[float]]] | None, runs: list[tuple[int, int]],
                     responses: Sequence[ParsedResponse], samples: Sequence[Sample],
                     frames: list[ImageTransform | None], *, task: Task) -> list[list[float] | None]:
        """Every run's values from one ``accuracy_batch`` call; None for a run it did not score well."""
        if batch_fn is None or len(runs) < 2:
            return [None] * len(runs)
        try:
            groups = [([task.parse_answer(task.answer_text(r)) for r in responses[a:b]], samples[a], frames[a])
                      for a, b in runs]
            raw = [[float(v) for v in row] for row in batch_fn(groups)]
        except Exception:  # noqa: BLE001 - scored run by run below, where each failure is warned about
            return [None] * len(runs)
        if len(raw) != len(runs):
            return [None] * len(runs)
        return [[min(1.0, max(0.0, v)) for v in row]
                if len(row) == b - a and all(math.isfinite(v) for v in row) else None
                for (a, b), row in zip(runs, raw, strict=True)]

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
            f"fn(responses, samples, *, task, frames=None{''.join(', ' + k + '=...' for k in options)}): {exc}; "
            "or write it as for TRL / VLM-R1, def fn(completions, solution, **kwargs) (docs/extending.md, "
            "\"Coming from VLM-R1 / TRL / verl\")"
        ) from exc


# ---- rewards written for TRL's GRPOTrainer or VLM-R1 -------------------------------------------------------

#: what TRL 1.16's GRPOTrainer passes besides the dataset columns, and syngrpo does not: a reward that needs
#: one of them (no default) is refused when the run starts
TRL_ONLY = ("completion_ids", "trainer_state", "log_extra", "log_metric", "environments")
#: the columns every sample gives a TRL-style reward (besides its record's own fields, ``Sample.meta``)
COLUMNS = ("solution", "problem", "image_path", "image_grid_thw", "id", "width", "height")
#: the patch a VLM-R1 reward multiplies ``image_grid_thw`` by (``input_height = grid[1] * 14``)
VLMR1_PATCH = 14


def trl_style(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is written for TRL / VLM-R1 (``def f(completions, solution, **kwargs)``): it names a
    ``completions`` parameter, which syngrpo's own convention (``responses, samples``) never does."""
    try:
        return "completions" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ColumnsReward:
    """A reward written for TRL's ``GRPOTrainer`` or VLM-R1, called as they call it.

    TRL 1.16 (``GRPOTrainer._calculate_rewards``) calls every reward function with keyword arguments only:
    ``prompts``, ``completions``, and each dataset column as a list with one entry per completion. For
    conversational prompts, which every image prompt is, a completion is ``[{"role": "assistant",
    "content": text}]`` (VLM-R1 reads ``completion[0]["content"]``); ``completions="text"`` passes the bare
    texts instead, as TRL does for plain-text prompts. The columns are :data:`COLUMNS` and the sample's
    record fields (``Sample.meta``): ``solution`` is the task's label as syngrpo holds it, in the original
    image's pixels (REC: ``[x1, y1, x2, y2]``, not VLM-R1's ``"<answer> ... </answer>"`` string);
    ``image_path`` is a one-element list (VLM-R1's); ``image_grid_thw`` is ``[1, h / 14, w / 14]`` for the
    frame the model's answer is written in (exact fractions), so VLM-R1's ``grid * 14`` rescaling to the
    original image is exact for every model family. A ``None`` reward counts 0 (TRL: "does not apply").
    The term's ``options`` are passed as keyword arguments too; an async function is awaited.
    """

    def __init__(self, ref: str, fn: Callable[..., Any], options: dict[str, Any], *,
                 completions: str = "conversation") -> None:
        from syngrpo.errors import ConfigError

        if completions not in ("conversation", "text"):
            raise ConfigError(f"reward {ref!r}: completions must be 'conversation' or 'text', not {completions!r}")
        self.ref = ref
        self.fn = fn
        self.options = dict(options)
        self.completions = completions
        self.name = getattr(fn, "__name__", ref)
        self._required = _check_trl_signature(ref, fn, self.options)

    def __call__(self, responses: Sequence[ParsedResponse], samples: Sequence[Sample], *, task: Task,
                 frames: Sequence[ImageTransform | None] | None = None) -> list[float]:
        if len(responses) != len(samples):
            raise ValueError(f"{len(responses)} responses but {len(samples)} samples: one sample per response")
        each_frame = list(frames) if frames is not None else [None] * len(responses)
        columns = sample_columns(samples, each_frame)
        conversation = self.completions == "conversation"
        completions = [[{"role": "assistant", "content": r.text}] if conversation else r.text for r in responses]
        prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.problem}]}]
                   if conversation else s.problem for s in samples]
        given = {"prompts": prompts, "completions": completions, **columns, **self.options}
        missing = [name for name in self._required if name not in given]
        if missing:
            raise ValueError(f"reward {self.ref!r} needs {missing}, which this dataset's samples do not have; "
                             f"it gets {sorted(given)}")
        values = self.fn(**given)
        if inspect.isawaitable(values):
            values = asyncio.run(_awaited(values))
        try:
            out = [0.0 if v is None else float(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"reward {self.ref!r} must return one number per completion; got {values!r:.200}") from exc
        if len(out) != len(responses):
            raise ValueError(f"reward {self.ref!r} returned {len(out)} values for {len(responses)} completions")
        bad = [v for v in out if not math.isfinite(v)]
        if bad:
            raise ValueError(f"reward {self.ref!r} returned non-finite values {bad[:3]}")
        return out


async def _awaited(value: Any) -> Any:
    return await value


def sample_columns(samples: Sequence[Sample], frames: Sequence[ImageTransform | None]) -> dict[str, list[Any]]:
    """The dataset columns of :class:`ColumnsReward`, one entry per completion (its sample's value)."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    extra = sorted({k for s in samples for k in s.meta if k not in COLUMNS and k not in ("prompts", "completions")})
    columns.update({k: [] for k in extra})
    for sample, frame in zip(samples, frames, strict=True):
        w, h = (frame.width, frame.height) if frame is not None and frame.width and frame.height else (
            sample.width, sample.height)
        columns["solution"].append(sample.solution)
        columns["problem"].append(sample.problem)
        columns["image_path"].append([str(sample.image)])
        columns["image_grid_thw"].append([1, Fraction(int(h), VLMR1_PATCH), Fraction(int(w), VLMR1_PATCH)])
        columns["id"].append(sample.id)
        columns["width"].append(sample.width)
        columns["height"].append(sample.height)
        for k in extra:
            columns[k].append(sample.meta.get(k))
    return columns


def verl_style(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a verl ``compute_score(data_source, solution_str, ground_truth, extra_info=None)``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "solution_str" in params and "ground_truth" in params


class VerlReward:
    """A verl ``compute_score`` called as verl's reward manager calls it: once per completion, with keyword
    arguments ``data_source`` (the task's name), ``solution_str`` (the completion's text), ``ground_truth``
    (the sample's label, as syngrpo holds it) and ``extra_info`` (the sample's columns, as
    :class:`ColumnsReward` gets them); a returned dict gives its ``"score"`` (verl's own rule)."""

    def __init__(self, ref: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.ref = ref
        self.fn = fn
        self.options = dict(options)
        self.name = getattr(fn, "__name__", ref)

    def __call__(self, responses: Sequence[ParsedResponse], samples: Sequence[Sample], *, task: Task,
                 frames: Sequence[ImageTransform | None] | None = None) -> list[float]:
        each_frame = list(frames) if frames is not None else [None] * len(responses)
        columns = sample_columns(samples, each_frame)
        out = []
        for i, (response, sample) in enumerate(zip(responses, samples, strict=True)):
            extra = {k: v[i] for k, v in columns.items()}
            value = self.fn(data_source=getattr(task, "name", type(task).__name__), solution_str=response.text,
                            ground_truth=sample.solution, extra_info=extra, **self.options)
            value = value.get("score") if isinstance(value, dict) else value
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"reward {self.ref!r} must return a number or a dict with 'score'; got "
                                f"{value!r:.200}") from exc
            if not math.isfinite(number):
                raise ValueError(f"reward {self.ref!r} returned {number} for sample {sample.id!r}")
            out.append(number)
        return out


def _check_trl_signature(ref: str, fn: Callable[..., Any], options: dict[str, Any]) -> list[str]:
    """The parameters a TRL-style reward requires; a :class:`ConfigError` with the one-line fix for a signature
    syngrpo cannot call as TRL does (positional-only parameters, a TRL-only argument without a default)."""
    from syngrpo.errors import ConfigError

    params = inspect.signature(fn).parameters.values()
    positional = [p.name for p in params if p.kind is p.POSITIONAL_ONLY]
    if positional:
        raise ConfigError(f"reward {ref!r}: TRL-style rewards are called with keyword arguments only (as TRL calls "
                          f"them); make {positional} ordinary parameters: drop the '/' from the signature")
    required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unsupplied = [name for name in required if name in TRL_ONLY]
    if unsupplied:
        raise ConfigError(f"reward {ref!r}: syngrpo does not pass {unsupplied} (TRL does); give "
                          f"{'them defaults' if len(unsupplied) > 1 else 'it a default'} "
                          f"({', '.join(n + '=None' for n in unsupplied)}) or read them from **kwargs")
    if "task" in required or "responses" in required:
        raise ConfigError(f"reward {ref!r} mixes the two conventions: TRL-style takes (completions, solution, "
                          "**kwargs); syngrpo's takes (responses, samples, *, task, frames=None)")
    return [name for name in required if name not in options]


def make_reward(registry: Any, name: str, options: dict[str, Any], *,
                completions: str = "conversation") -> Callable[..., list[float]]:
    """The reward a config's term names: a registered one, or a ``file.py:function`` reference written for
    syngrpo, for TRL / VLM-R1 (:class:`ColumnsReward`, its completions shaped as ``completions`` says) or for
    verl (:class:`VerlReward`)."""
    from syngrpo.plugins import is_callable_ref, load_callable

    if is_callable_ref(name):
        fn = load_callable(name)
        if trl_style(fn):
            return ColumnsReward(name, fn, options, completions=completions)
        if verl_style(fn):
            return VerlReward(name, fn, options)
        return ReferencedReward(name, fn, options)
    return registry.create("rewards", name, **options)
