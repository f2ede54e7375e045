"""Helpers for plugin authors' tests (and syngrpo's own).

Two things every plugin package wants to check without copying syngrpo's test
suite:

* :func:`registry_with` — a fresh :class:`~syngrpo.plugins.Registry` with your
  plugin object registered directly (no install needed), optionally next to
  everything the entry points provide.
* :func:`check_task_contract` — a conformance check any :class:`~syngrpo.perception.task.Task`
  must pass: its toy data round-trips through ``save``/``load``, its reference
  answers score 1.0 once written in its answer format and read back by its own
  parser, its parser survives junk, its labels follow image transforms.
* :func:`check_family_contract` — the same for a
  :class:`~syngrpo.models.family.ModelFamily` on its tiny model: prompts encode,
  suppressed tokens are never sampled, scoring log-probs equal the sampler's,
  reference boxes in its coordinate convention map back exactly, save/load.

Both are plain functions (no pytest dependency), so they work in any test runner::

    from syngrpo.testing import check_task_contract, registry_with

    def test_my_task_keeps_the_contract(tmp_path):
        task = registry_with(my_plugin).create("tasks", "counting")
        check_task_contract(task, tmp_path)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.perception.geometry import ImageTransform, valid_box
from syngrpo.perception.task import MAX_JOB_LABEL_CHARS, Task
from syngrpo.plugins import Registry, build_registry, make_plugin_manager
from syngrpo.types import Sample

#: strings no parser may raise on (model output is arbitrary text)
JUNK_ANSWERS: tuple[str | None, ...] = (
    None, "", " ", "\n", "null", "None", "true", "[]", "{}", "[", "]", "{", "}", "[[[[", "]]}}", "0", "-1",
    "1e999", "-1e999", "NaN", "Infinity", "3.5", "[1, 2, 3]", "[1, 2, 3, 4]", "[4, 3, 2, 1]", "[[1, 2, 3, 4]]",
    '["a", "b", "c", "d"]', "[null, null, null, null]", "[true, false, true, false]", "[1e999, 0, 1, 2]",
    '{"bbox_2d": "box"}', '[{"bbox_2d": [1, 2, 3], "label": 5}]', '[{"bbox_2d": [1, 2, 3, 4], "label": null}]',
    '[{"bbox_2d": [3, 4, 1, 2], "label": "x", "rotation": "up"}]', '[{"label": "x"}]', "[{}]", "[[]]",
    "```json\n[\n```", "\x00\x01\x02", "\ud800", "é" * 50, "<answer>1</answer>", "one two three",
    "[" * 2000 + "]" * 2000, "9" * 5000,
)


class ContractError(AssertionError):
    """A task broke the :class:`~syngrpo.perception.task.Task` contract; the message says which clause."""


@dataclass
class ContractReport:
    """What :func:`check_task_contract` checked, and what it could not check (with why)."""

    task: str
    checked: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def process_alive(pid: int) -> bool:
    """True while process ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone.

    For tests that kill a trainer or a data server and wait for the other side to notice (Linux ``/proc``).
    """
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def registry_with(*plugins: object, autoload: bool = False) -> Registry:
    """A fresh registry with ``plugins`` (modules, classes or objects with ``@hookimpl`` functions).

    With ``autoload=True`` the installed entry points load too (so a test can
    check that a plugin's names do not clash with installed ones); a plugin
    module that an installed entry point already loaded is registered once, so the
    same test passes whether or not the plugin's package is installed.
    """
    return build_registry(make_plugin_manager(plugins, autoload=autoload))


def _fail(task: Task, clause: str, detail: str) -> None:
    raise ContractError(f"task {getattr(task, 'name', type(task).__name__)!r} breaks the contract: {clause}: {detail}")


def _plain(value: Any) -> Any:
    """JSON-shaped copy (tuples become lists) for comparisons."""
    return json.loads(json.dumps(value))


def _close(a: Any, b: Any, tol: float) -> bool:
    """Structural equality with numbers compared to ``tol`` (absolute)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=0.0, abs_tol=tol)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    return a == b


def render_answer(task: Task, solution: Any) -> str:
    """The task's answer text for a label: ``task.format_answer(solution)`` when the task has one, else JSON."""
    fmt: Callable[[Any], str] | None = getattr(task, "format_answer", None)
    return fmt(solution) if callable(fmt) else json.dumps(solution)


def _prefixes(text: str, limit: int = 60) -> Iterable[str]:
    """Truncations of a valid answer: the junk a model cut off by ``max_new_tokens`` writes."""
    step = max(1, len(text) // limit)
    return (text[:i] for i in range(0, len(text), step))


def check_task_contract(
    task: Task,
    tmp_dir: str | Path,
    *,
    n: int = 3,
    seed: int = 0,
    image_size: int = 112,
    toy_options: dict[str, Any] | None = None,
    perfect_metrics_are_one: bool = True,
    junk: Iterable[str | None] = JUNK_ANSWERS,
) -> ContractReport:
    """Check the generic clauses of the Task contract on the task's own toy data; raise :class:`ContractError`.

    Clauses checked (each named in the error message when it fails):

    1. ``make_toy_dataset`` gives ``n`` samples of this task with unique ids, existing images of the
       stated size, JSON-serialisable records; the same seed gives the same labels.
    2. ``save`` then ``load`` gives the samples back (skipped, and reported, when the task does not
       implement ``save``).
    3. ``question`` is a non-empty string; ``class_names`` a list of strings; ``foreground_boxes``
       valid boxes inside the image; ``foreground_labels`` one non-empty string per foreground box.
    4. Each reference answer, written in the answer format (:func:`render_answer`) and read back
       with ``parse_answer``, scores ``accuracy`` 1.0, also when the model saw a resized image and
       the ``frame`` maps its answer back; ``accuracy(None)`` is 0.
    5. ``parse_answer`` never raises on junk (``junk`` plus every truncation of every reference
       answer), and ``accuracy`` of whatever it returns is a number in [0, 1].
    6. ``evaluate`` gives finite values in [0, 1] for perfect and for unreadable predictions; perfect
       ones score at least as high on every metric (exactly 1.0 with ``perfect_metrics_are_one``).
    7. ``transform_solution`` under the identity transform is the identity, and a uniform resize
       followed by its inverse gives the label back.
    """
    tmp = Path(tmp_dir)
    report = ContractReport(task=getattr(task, "name", type(task).__name__))
    if not isinstance(task, Task):
        _fail(task, "type", f"{type(task).__name__} is not a syngrpo.perception.task.Task")
    opts = dict(toy_options or {})

    # 1. toy data
    samples = task.make_toy_dataset(tmp / "toy_a", n=n, seed=seed, image_size=image_size, **opts)
    if len(samples) != n:
        _fail(task, "make_toy_dataset", f"asked for {n} samples, got {len(samples)}")
    if len({s.id for s in samples}) != n:
        _fail(task, "make_toy_dataset", "sample ids are not unique")
    from PIL import Image

    for s in samples:
        if not isinstance(s, Sample) or s.task != task.name:
            _fail(task, "make_toy_dataset", f"sample {getattr(s, 'id', s)!r} is not a Sample of task {task.name!r}")
        if not Path(s.image).is_file():
            _fail(task, "make_toy_dataset", f"image {s.image!r} of sample {s.id!r} does not exist")
        with Image.open(s.image) as im:
            if im.size != (s.width, s.height):
                _fail(task, "make_toy_dataset", f"sample {s.id!r} says {s.width}x{s.height}, image is {im.size}")
        try:
            json.dumps(s.to_dict())
        except (TypeError, ValueError) as exc:
            _fail(task, "make_toy_dataset", f"sample {s.id!r} is not JSON-serialisable ({exc})")
    again = task.make_toy_dataset(tmp / "toy_b", n=n, seed=seed, image_size=image_size, **opts)
    if [_plain(s.solution) for s in again] != [_plain(s.solution) for s in samples]:
        _fail(task, "make_toy_dataset", "the same seed gave different labels")
    report.checked.append("toy data")

    # 2. save / load round trip
    path = tmp / "roundtrip" / "data.jsonl"
    try:
        task.save(samples, path)
    except NotImplementedError as exc:
        report.skipped["save/load"] = f"save is not implemented ({exc})"
    else:
        loaded = task.load(path)
        if len(loaded) != len(samples):
            _fail(task, "save/load", f"saved {len(samples)} samples, loaded {len(loaded)}")
        for a, b in zip(samples, loaded, strict=True):
            for attr in ("id", "task", "width", "height", "problem", "source_id", "generation", "description"):
                if getattr(a, attr) != getattr(b, attr):
                    _fail(task, "save/load", f"{attr} of {a.id!r} changed: {getattr(a, attr)!r} -> {getattr(b, attr)!r}")
            if Path(a.image).resolve() != Path(b.image).resolve():
                _fail(task, "save/load", f"image of {a.id!r} changed: {a.image!r} -> {b.image!r}")
            if not _close(_plain(a.solution), _plain(b.solution), 1e-9):
                _fail(task, "save/load", f"solution of {a.id!r} changed: {a.solution!r} -> {b.solution!r}")
        report.checked.append("save/load")

    # 3. prompt, classes, foreground
    for s in samples:
        q = task.question(s)
        if not isinstance(q, str) or not q.strip():
            _fail(task, "question", f"empty question for {s.id!r}")
        boxes = task.foreground_boxes(s)
        for box in boxes:
            inside = valid_box(box) and box[0] >= 0 and box[1] >= 0 and box[2] <= s.width and box[3] <= s.height
            if not inside:
                _fail(task, "foreground_boxes", f"{box!r} of {s.id!r} is not a valid box inside the image")
        labels = task.foreground_labels(s)
        if len(labels) != len(boxes) or not all(isinstance(x, str) and x.strip() and len(x) <= MAX_JOB_LABEL_CHARS
                                                for x in labels):
            _fail(task, "foreground_labels", f"expected one non-empty label of at most {MAX_JOB_LABEL_CHARS} "
                  f"characters per foreground box of {s.id!r} (the data server refuses others), got {labels!r}")
    names = task.class_names()
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        _fail(task, "class_names", f"expected a list of strings, got {names!r}")
    report.checked.append("question/class_names/foreground_boxes/foreground_labels")

    # 4. reference answers score 1.0, also through a resized frame
    perfect = []
    for s in samples:
        text = render_answer(task, s.solution)
        parsed = task.parse_answer(text)
        if parsed is None:
            _fail(task, "parse_answer", f"cannot read its own reference answer {text!r}")
        acc = task.accuracy(parsed, s)
        if not math.isclose(acc, 1.0, abs_tol=1e-6):
            _fail(task, "accuracy", f"reference answer {text!r} of {s.id!r} scores {acc}, not 1.0")
        frame = ImageTransform.resize(s.width, s.height, 2 * s.width, 3 * s.height)
        seen = task.parse_answer(render_answer(task, task.transform_solution(s.solution, frame)))
        acc = task.accuracy(seen, s, frame=frame)
        if not math.isclose(acc, 1.0, abs_tol=1e-6):
            _fail(task, "accuracy(frame=...)", f"the reference answer in a 2x3-resized frame of {s.id!r} "
                  f"scores {acc} after mapping back, not 1.0")
        none_acc = task.accuracy(None, s)
        if none_acc != 0.0:
            _fail(task, "accuracy(None)", f"an unreadable answer scores {none_acc}, not 0")
        perfect.append(parsed)
    report.checked.append("reference answers")

    # 5. junk
    texts = list(junk)
    for s in samples:
        texts.extend(_prefixes(render_answer(task, s.solution)))
    for text in texts:
        try:
            parsed = task.parse_answer(text)
        except Exception as exc:  # noqa: BLE001 - the clause is "never raises"
            _fail(task, "parse_answer", f"raised {type(exc).__name__}: {exc} on {text!r:.80}")
        try:
            acc = task.accuracy(parsed, samples[0])
        except Exception as exc:  # noqa: BLE001
            _fail(task, "accuracy", f"raised {type(exc).__name__}: {exc} on the parse of {text!r:.80}")
        if not (isinstance(acc, (int, float)) and 0.0 <= acc <= 1.0):
            _fail(task, "accuracy", f"{acc!r} is not in [0, 1] for the parse of {text!r:.80}")
    report.checked.append("junk answers")

    # 6. evaluate
    good = task.evaluate(perfect, samples)
    bad = task.evaluate([None] * len(samples), samples)
    for label, metrics in (("perfect", good), ("unreadable", bad)):
        if not isinstance(metrics, dict) or not metrics:
            _fail(task, "evaluate", f"expected a non-empty dict of metrics, got {metrics!r}")
        for key, value in metrics.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                _fail(task, "evaluate", f"{label} predictions give {key}={value!r}, not in [0, 1]")
    for key, value in good.items():
        if value < bad.get(key, 0.0):
            _fail(task, "evaluate", f"{key} is lower for perfect predictions ({value}) than unreadable ones")
        if perfect_metrics_are_one and not math.isclose(value, 1.0, abs_tol=1e-6):
            _fail(task, "evaluate", f"perfect predictions give {key}={value}, not 1.0")
    report.checked.append("evaluate")

    # 7. transforms
    for s in samples:
        same = task.transform_solution(s.solution, ImageTransform.identity(s.width, s.height))
        if _plain(same) != _plain(s.solution):
            _fail(task, "transform_solution", f"the identity changed the label of {s.id!r}: {s.solution!r} -> {same!r}")
        up = ImageTransform.resize(s.width, s.height, 2 * s.width, 2 * s.height)
        back = task.transform_solution(task.transform_solution(s.solution, up), up.inverse(s.width, s.height))
        if not _close(_plain(back), _plain(s.solution), 1e-6):
            _fail(task, "transform_solution", f"resize x2 then back changed the label of {s.id!r}: "
                  f"{s.solution!r} -> {back!r}")
    report.checked.append("transforms")
    return report


# ---- model families ----------------------------------------------------------------------------------


@dataclass
class FamilyContractReport:
    """What :func:`check_family_contract` measured."""

    family: str
    model_dir: str = ""
    checked: list[str] = field(default_factory=list)
    #: max |scoring log-prob - sampler log-prob| on each scoring path
    logprob_error: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _family_fail(family: Any, clause: str, detail: str) -> None:
    raise ContractError(f"model family {getattr(family, 'name', type(family).__name__)!r} breaks the contract: "
                        f"{clause}: {detail}")


def check_family_contract(family: Any, tmp_dir: str | Path, *, model_dir: str | Path | None = None,
                          tolerance: float = 1e-4, image_size: tuple[int, int] = (200, 100)) -> FamilyContractReport:
    """Check a :class:`~syngrpo.models.family.ModelFamily` on its tiny model (or ``model_dir``); raise
    :class:`ContractError` naming the clause that fails.

    1. ``build_tiny`` writes a checkpoint that ``load_policy(..., family=family)`` loads, whose
       ``model_type`` the family recognises.
    2. Prompts encode: one image placeholder run per prompt whose length matches the image grid, the
       question's text inside the prompt, frames of the model-input size.
    3. ``generate`` never emits a suppressed token, even when a hook on the output head makes the
       suppressed tokens the most likely ones.
    4. The log-probs of :func:`syngrpo.models.scoring.completion_logprobs` equal the sampler's raw
       ``output_logits`` (temperature applied) within ``tolerance``, on the naive path and, when the
       family says it applies, on the shared-prefix path.
    5. A reference box written in the family's convention (:attr:`~ModelFamily.coordinates`) for an
       image the processor resized to another size maps back to the labelled box (IoU 1.0), and is
       where the convention says (pixels of the resized image, or 0..scale of each axis).
    6. ``save_pretrained`` + ``load_policy`` give the same prompt ids and logits.
    7. Several images per prompt (unless the family's ``max_images`` is 1): one placeholder run per
       image, in order, each as long as its grid says; the frames are those of each prompt's box image;
       scoring equals the sampler as in 4.  A family with ``max_images == 1`` must refuse two images.
    """
    import time

    import torch
    from PIL import Image

    from syngrpo.models.family import ModelFamily
    from syngrpo.models.policy import encode_prompts, load_policy
    from syngrpo.models.scoring import completion_logprobs
    from syngrpo.perception.geometry import iou

    t0 = time.perf_counter()
    if not isinstance(family, ModelFamily):
        _family_fail(family, "type", f"{type(family).__name__} is not a syngrpo.models.family.ModelFamily")
    if not family.name or not family.model_types:
        _family_fail(family, "attributes", "name and model_types must be set")
    tmp = Path(tmp_dir)
    report = FamilyContractReport(family=family.name)

    # 1. tiny build and load
    path = Path(model_dir) if model_dir is not None else Path(family.build_tiny(tmp / "tiny", seed=0))
    report.model_dir = str(path)
    bundle = load_policy(path, family=family, dtype="float32", device="cpu")
    if not family.recognises(bundle.model_type):
        _family_fail(family, "recognises", f"its own tiny model is a {bundle.model_type!r} checkpoint")
    if not bundle.suppress_token_ids:
        _family_fail(family, "suppress_tokens", "no suppressed token id found in the tokenizer")
    if not bundle.eos_token_ids:
        _family_fail(family, "eos_tokens", "no end-of-turn token id found in the tokenizer")
    report.checked.append("build/load")

    # 2. prompts
    w, h = image_size
    rng = torch.Generator().manual_seed(0)
    pixels = (torch.rand(h, w, 3, generator=rng) * 255).to(torch.uint8).numpy()
    images = [Image.fromarray(pixels), Image.fromarray(pixels[: h // 2 * 2, : w // 2 * 2]).resize((w // 2, h))]
    questions = ["Locate the red circle.", "Where is the blue square?"]
    batch = encode_prompts(bundle, images, questions)
    image_token = bundle.image_token_id
    for i, (q, g) in enumerate(zip(questions, batch.image_grid_thw.tolist(), strict=True)):
        if q not in batch.prompts[i]:
            _family_fail(family, "render_prompt", f"the question is not in the prompt {batch.prompts[i]!r}")
        n = int((batch.input_ids[i] == image_token).sum())
        want = family.image_token_count(g, bundle)
        if n != want:
            _family_fail(family, "encode", f"prompt {i} has {n} image placeholders for a grid {g} ({want} expected)")
        f = batch.input_frames[i]
        if (f.width, f.height) != (g[2] * bundle.patch_size, g[1] * bundle.patch_size):
            _family_fail(family, "input_frame", f"frame {f} does not match the grid {g}")
    report.checked.append("prompts encode")

    # 3. suppressed tokens are never sampled, even when they are the most likely
    from syngrpo.plugins import get_registry

    engine = get_registry().create("rollout_engines", "hf", bundle=bundle, return_logprobs=True)
    suppressed = torch.tensor(bundle.suppress_token_ids)

    def favour_suppressed(module: Any, args: Any, output: Any) -> Any:
        output = output.clone()
        output[..., suppressed] += 1e4
        return output

    head = bundle.model.get_output_embeddings()
    handle = head.register_forward_hook(favour_suppressed)
    try:
        pushed = engine.generate(bundle, batch, num_generations=2, temperature=1.0, top_p=1.0, max_new_tokens=6,
                                 generator_seed=0)
    finally:
        handle.remove()
    sampled = pushed.completion_ids[pushed.completion_mask.bool()]
    if bool(torch.isin(sampled, suppressed).any()):
        _family_fail(family, "suppress_tokens", "generate emitted a suppressed token")
    report.checked.append("no suppressed token sampled")

    # 4. scoring log-probs = the sampler's
    G, temperature = 3, 0.7
    rollout = engine.generate(bundle, batch, num_generations=G, temperature=temperature, top_p=1.0,
                              max_new_tokens=12, generator_seed=1)
    paths = {"naive": False}
    if family.shared_prefix:
        paths["shared-prefix"] = True
    with torch.no_grad():
        for label, shared in paths.items():
            logp, _ = completion_logprobs(bundle.model, rollout.batch, rollout.completion_ids, rollout.completion_mask,
                                          group_size=G, shared_prefix=shared, temperature=temperature)
            err = float((logp - rollout.logprobs).abs().max())
            report.logprob_error[label] = err
            if not err <= tolerance:
                _family_fail(family, f"scoring ({label})", f"log-probs differ from the sampler's by {err:.2e} "
                             f"(tolerance {tolerance:.0e}); does the forward get every per-token input "
                             f"({', '.join(family.token_type_keys)})?")
    report.checked.append("scoring = sampler")

    # 5. a reference box in the family's convention scores 1.0 on a resized image
    label = (50.0, 20.0, 150.0, 80.0)  # in the original w x h image
    input_frame, frame = batch.input_frames[0], batch.frames[0]
    if (input_frame.width, input_frame.height) == (w, h):
        _family_fail(family, "frames", f"pick another image_size: the processor kept {w}x{h} as it was")
    written = frame.box(label)
    conv = family.coordinates
    if conv.kind == "relative":
        expected = (label[0] / w * conv.scale, label[1] / h * conv.scale, label[2] / w * conv.scale,
                    label[3] / h * conv.scale)
    else:
        expected = input_frame.box(label)
    if not _close(list(written), list(expected), 1e-6):
        _family_fail(family, "coordinates", f"the label {label} is written as {written}, but the {conv.kind} "
                     f"convention says {expected}")
    text = json.dumps([round(v, 6) for v in written])
    back = frame.inverse(w, h).box(json.loads(text))
    score = iou(back, label)
    if not math.isclose(score, 1.0, abs_tol=1e-6):
        _family_fail(family, "frames", f"the reference answer {text} maps back to {back}, IoU {score} with {label}")
    report.checked.append("reference box scores 1.0 through the frame")

    # 6. save / load round trip
    saved = tmp / "saved"
    bundle.model.save_pretrained(saved)
    bundle.processor.save_pretrained(saved)
    again = load_policy(saved, family=family, dtype="float32", device="cpu")
    batch2 = encode_prompts(again, images, questions)
    if not torch.equal(batch2.input_ids, batch.input_ids):
        _family_fail(family, "save/load", "the reloaded processor encodes the prompts differently")
    with torch.no_grad():
        a = bundle.model(**batch.model_inputs()).logits
        b = again.model(**batch2.model_inputs()).logits
    if not torch.allclose(a, b, atol=1e-6, rtol=0):
        _family_fail(family, "save/load", f"logits changed by {float((a - b).abs().max()):.2e} after reloading")
    report.checked.append("save/load")

    # 7. several images per prompt
    _check_several_images(family, bundle, engine, images, tolerance, report)
    report.seconds = time.perf_counter() - t0
    return report


def _check_several_images(family: Any, bundle: Any, engine: Any, images: list[Any], tolerance: float,
                          report: FamilyContractReport) -> None:
    """Clause 7 of :func:`check_family_contract`."""
    import torch

    from syngrpo.errors import ConfigError
    from syngrpo.models.policy import encode_prompts
    from syngrpo.models.scoring import completion_logprobs

    rows = [[images[0], images[1]], [images[1]]]
    questions = ["Locate the circle in the second image.", "Where is the blue square?"]
    if family.max_images is not None and family.max_images < 2:
        try:
            encode_prompts(bundle, rows, questions, box_images=[1, 0])
        except ConfigError:
            report.checked.append("refuses several images (max_images 1)")
            return
        _family_fail(family, "max_images", "max_images is 1 but encode_prompts took a prompt of two images")
    batch = encode_prompts(bundle, rows, questions, box_images=[1, 0])
    if batch.counts() != [2, 1] or int(batch.image_grid_thw.shape[0]) != 3:
        _family_fail(family, "several images", f"two prompts of 2 and 1 images gave counts {batch.counts()} and "
                     f"{int(batch.image_grid_thw.shape[0])} grids (3 expected)")
    grids = batch.image_grid_thw.tolist()
    per_row = [grids[0:2], grids[2:3]]
    image_token = bundle.image_token_id
    for i, row in enumerate(per_row):
        n = int((batch.input_ids[i] == image_token).sum())
        want = sum(family.image_token_count(g, bundle) for g in row)
        if n != want:
            _family_fail(family, "several images", f"prompt {i} has {n} image placeholders for grids {row} "
                         f"({want} expected)")
    box = batch.input_frames[0]
    want_box = family.input_frame(images[1].width, images[1].height, grids[1], bundle.patch_size)
    if (box.width, box.height) != (want_box.width, want_box.height):
        _family_fail(family, "several images", f"prompt 0's frame {box} is not its box image's ({want_box})")
    G, temperature = 2, 0.7
    rollout = engine.generate(bundle, batch, num_generations=G, temperature=temperature, top_p=1.0,
                              max_new_tokens=8, generator_seed=2)
    with torch.no_grad():
        for label, shared in {"naive": False, **({"shared-prefix": True} if family.shared_prefix else {})}.items():
            logp, _ = completion_logprobs(bundle.model, rollout.batch, rollout.completion_ids, rollout.completion_mask,
                                          group_size=G, shared_prefix=shared, temperature=temperature)
            err = float((logp - rollout.logprobs).abs().max())
            report.logprob_error[f"two images, {label}"] = err
            if not err <= tolerance:
                _family_fail(family, f"several images, scoring ({label})", f"log-probs differ from the sampler's by "
                             f"{err:.2e} (tolerance {tolerance:.0e}) on prompts of two images")
    report.checked.append("several images: placeholders, box frame, scoring = sampler")
