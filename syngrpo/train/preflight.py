"""Pre-flight checks of a training config: everything that can be wrong before anything expensive.

``syngrpo check -c CONFIG`` runs :func:`check_config`, and so does ``syngrpo train`` before it
loads a model or starts the SFT warm start, so a typo in a plugin name or option, or a missing
image on line 7 000 of the dataset, is an error in seconds instead of after minutes of work:

- the config itself (pydantic) and the cross-section checks of :func:`syngrpo.config.check_runnable`;
- the rules that need the plugins or the machine: synthesis has somewhere to send its jobs (URLs, a
  spawned server, or a transport that declares itself in-process; :mod:`syngrpo.synthesis.connect`),
  and ``parallel.strategy: fsdp`` does not train in float16 (the rule needing the number of
  processes, ``optim.batch_size`` a multiple of it, is :func:`syngrpo.train.components.join_run`'s);
- every plugin name the config names (task, rewards, advantage estimator, policy loss, rollout
  engine, transport, and the synthesizer/segmenter of the spawned or in-process data server, whose
  config is the very object the run starts it with), and
  its options: cheap plugins are built (a task, a reward), the others' options are matched against
  the keyword options of the class they build, named by the factory's ``options_from``
  (``"module:Class"``) attribute; nothing loads a model;
- ``synthesis.job_options`` against the options the synthesizer declares (bounded ranges);
- every dataset record: the task's reader can read it, its image exists, decodes and is within PIL's
  decompression-bomb limit, its foreground boxes are finite, inside the image, not inverted and not
  empty, and its texts (problem, labels, description) are at most ``data.max_text_chars`` long.
  Every bad record is an error naming file and record (all of them, not the first), or, with
  ``data.bad_samples: drop``, left out of training with one line naming it and a total
  (:func:`check_dataset`; the readers skip what they cannot read through
  :func:`~syngrpo.data.files.skipping_bad_records`).  A source in another format (``data.format``) is
  read by its reader first, whose errors list every bad record of the original files (file, record
  number, what to change); a sample it produced names its original record too.  A Hugging Face
  dataset's path-only images are checked row by row.

The spawned (or in-process) data server's synthesizer is looked up where that server looks it up:
the installed plugins plus the modules its own ``plugins:`` key lists.
"""

from __future__ import annotations

import importlib
import inspect
import math
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from syngrpo.config import TrainConfig, check_runnable
from syngrpo.config.io import validate
from syngrpo.data.files import located_records, skipping_bad_records
from syngrpo.data.formats import SOURCE_KEY, DatasetError, materialize_format
from syngrpo.data.hf import HF_PREFIX, image_problems, is_dataset_source, load_rows
from syngrpo.errors import ConfigError, SyngrpoError
from syngrpo.perception.rewards import make_reward
from syngrpo.plugins import get_registry, is_callable_ref, keyword_options
from syngrpo.scale.dtype import compute_dtype
from syngrpo.synthesis.connect import (
    declares_finds_server,
    declares_in_process,
    names_no_server,
    spawn_conflict,
    spawned_server_config,
)
from syngrpo.synthesis.pipeline import job_options_model
from syngrpo.synthesis.server.calls import load_plugin_modules
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.validation import ApiError, check_job_options, check_synthesizer
from syngrpo.train.components import policy_loss_options
from syngrpo.types import Sample

#: a box may exceed the image by this many pixels (rounding in converted datasets) before it is bad
BOX_TOLERANCE_PX = 1.0


@dataclass
class CheckReport:
    """What :func:`check_config` found: notes (what was checked), errors, and samples to leave out."""

    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: split -> (sample id, image path) of samples ``data.bad_samples: drop`` leaves out
    dropped: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    #: one line per record ``data.bad_samples: drop`` leaves out (file and record), then a total per file
    drops: list[str] = field(default_factory=list)
    #: split -> the most images one of its samples shows (the model family must take that many)
    max_images: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def keep(self, samples: list[Sample], split: str) -> list[Sample]:
        """``samples`` without those this report drops."""
        bad = self.dropped.get(split)
        if not bad:
            return samples
        return [s for s in samples if (s.id, s.image) not in bad]

    def load(self, read: Callable[[], list[Sample]], split: str) -> list[Sample]:
        """``read()``'s samples less those this report drops; records the reader cannot read are skipped as the
        check skipped them (only ``data.bad_samples: drop`` lets a run start with any)."""
        with skipping_bad_records():
            return self.keep(read(), split)

    def raise_for_errors(self) -> None:
        if self.errors:
            shown = self.errors[:20]
            more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
            raise ConfigError("the config does not pass its checks:\n  " + "\n  ".join(shown) + more)


def _options_of(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword options a factory takes: its own signature, or that of the class its ``options_from`` names."""
    target = getattr(factory, "options_from", None)
    if isinstance(target, str):
        module, _, name = target.partition(":")
        return keyword_options(getattr(importlib.import_module(module), name))
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None  # takes anything: the plugin checks its options when built
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _resolve(report: CheckReport, registry: Any, kind: str, name: str, key: str) -> Any:
    try:
        return registry.get(kind, name)
    except (SyngrpoError, KeyError) as exc:
        report.errors.append(f"{key}: {exc}")
        return None


def _check_options(report: CheckReport, registry: Any, kind: str, name: str, options: dict[str, Any], key: str,
                   *, build: bool, given: Iterable[str] = ()) -> None:
    """Resolve ``name``; build it with ``options`` (cheap plugins) or match them against what it takes."""
    reg = _resolve(report, registry, kind, name, key)
    if reg is None:
        return
    if build:
        try:
            reg.factory(**options)
        except Exception as exc:  # noqa: BLE001 - any failure to build is the config's error here
            report.errors.append(f"{key}: {name!r} cannot be built with options {sorted(options)}: {exc}")
            return
    else:
        try:
            known = _options_of(reg.factory)
        except Exception as exc:  # noqa: BLE001 - e.g. the plugin's extra is not installed
            report.errors.append(f"{key}: {name!r} cannot be loaded: {type(exc).__name__}: {exc}")
            return
        if known is not None:
            unknown = sorted(set(options) - known - set(given))
            if unknown:
                report.errors.append(f"{key}: unknown option(s) {unknown} for {name!r}; it takes: "
                                     f"{', '.join(sorted(known - set(given))) or 'no options'}")
                return
    report.notes.append(f"{key}: {name} ok")


def _check_synthesis(cfg: TrainConfig, registry: Any, report: CheckReport) -> None:
    """The transport, where its jobs go, and the data server the run starts (spawned or in process).

    An in-process transport (its factory declares ``in_process = True``; :mod:`syngrpo.synthesis.connect`)
    takes the server's config keys as options, besides the keyword options of the class its
    ``options_from`` names; any other transport has its options matched and is given ``urls`` and ``token``.
    """
    s = cfg.synthesis
    reg = _resolve(report, registry, "transports", s.transport, "synthesis.transport")
    if reg is None:
        return
    in_process, finds = declares_in_process(reg.factory), declares_finds_server(reg.factory)
    if names_no_server(s, in_process, finds):
        report.errors.append(
            f"synthesis.servers: synthesis.mode is {s.mode!r} but no data server is given; set synthesis.servers "
            "(URLs of `syngrpo serve`), synthesis.spawn_server: true, synthesis.transport: inprocess (or another "
            "in-process transport), or synthesis.mode: off")
    conflict = spawn_conflict(s, finds)
    if conflict:
        report.errors.append(conflict)
    if not in_process:
        _check_options(report, registry, "transports", s.transport, dict(s.transport_options),
                       "synthesis.transport", build=False, given=() if finds else ("urls", "token"))
    try:
        if s.spawn_server:
            server, where = spawned_server_config(s), "synthesis.server"
        elif in_process:
            own = _options_of(reg.factory) or set()
            options = {k: v for k, v in s.transport_options.items() if k not in own}
            server = validate(ServerConfig, options, source="synthesis.transport_options")
            where = "synthesis.transport_options"
        else:
            return  # a remote server: it checks its own plugins; the run learns of refusals per job
    except (SyngrpoError, ValueError) as exc:
        report.errors.append(f"data server config: {exc}")
        return
    if server.plugins:  # the server's own plugins: what the server it starts will look names up in
        try:
            registry = get_registry(load_plugin_modules(list(server.plugins)))
        except (SyngrpoError, ImportError) as exc:
            report.errors.append(f"{where}.plugins: {exc}")
            return
        report.notes.append(f"{where}.plugins: {', '.join(server.plugins)} loaded as the data server loads them")
    if server.backend != "local":
        _check_server_backend(report, registry, server, where)
    served = server.served_synthesizers()
    for name in served:
        _resolve(report, registry, "synthesizers", name, f"{where}: synthesizer")
    _resolve(report, registry, "segmenters", server.segmenter, f"{where}: segmenter")
    if server.label_segmenter is not None:
        _resolve(report, registry, "segmenters", server.label_segmenter, f"{where}: label_segmenter")
    try:
        name, options = check_synthesizer(dict(s.job_options), served, server.synthesizer)
        check_job_options(name, options, job_options_model(registry.get("synthesizers", name).factory))
    except ApiError as err:
        report.errors.append(f"synthesis.job_options: {err.message}")
    except (SyngrpoError, KeyError):
        pass  # the unknown name is reported above
    else:
        report.notes.append(f"synthesis: server synthesizer {server.synthesizer}, segmenter {server.segmenter}, "
                            "job options ok")


def _check_correction(cfg: TrainConfig, registry: Any, report: CheckReport) -> None:
    """``rollout.importance_correction`` needs the engine's log-probs and a policy loss that takes ``is_weights``."""
    key, mode = "rollout.importance_correction", cfg.rollout.importance_correction.mode
    engine = _resolve(report, registry, "rollout_engines", cfg.rollout.engine, "rollout.engine")
    try:
        known = _options_of(engine.factory) if engine is not None else None
    except Exception:  # noqa: BLE001 - reported by the engine's own check
        known = None
    if known is not None and "return_logprobs" in known and not cfg.rollout.engine_options.get("return_logprobs"):
        report.errors.append(f"{key}: mode {mode!r} weighs the loss by the engine's log-probs, which the "
                             f"{cfg.rollout.engine!r} engine returns only when asked: set "
                             "rollout.engine_options.return_logprobs: true")
    loss = _resolve(report, registry, "policy_losses", cfg.algorithm.policy_loss.name, "algorithm.policy_loss")
    try:
        params = inspect.signature(loss.factory(**policy_loss_options(cfg)).__call__).parameters.values()
    except Exception:  # noqa: BLE001 - reported by the policy loss's own check
        return
    if not any(p.name == "is_weights" or p.kind is p.VAR_KEYWORD for p in params):
        report.errors.append(f"{key}: the policy loss {cfg.algorithm.policy_loss.name!r} takes no is_weights "
                             "argument, so the correction cannot reach it (docs/hooks/policy_losses.md); set mode: off")
def _check_server_backend(report: CheckReport, registry: Any, server: ServerConfig, where: str) -> None:
    """The server backend the spawned server names, and its ``backend_options`` when the backend's factory can
    check them without starting anything (its ``check_config(config)`` attribute; ``ray`` has one)."""
    reg = _resolve(report, registry, "server_backends", server.backend, f"{where}: backend")
    check = getattr(reg.factory, "check_config", None) if reg is not None else None
    if check is None:
        return
    try:
        check(server)
    except (SyngrpoError, ValueError) as exc:
        report.errors.append(f"{where}: backend {server.backend!r}: {exc}")


def _check_parallel(cfg: TrainConfig, report: CheckReport) -> None:
    """FSDP shards training in float32 or bfloat16, full or LoRA (its float16 would need a sharded gradient scaler)."""
    if cfg.parallel.strategy != "fsdp":
        return
    if _compute_dtype_here(cfg) == "float16":
        report.errors.append("parallel.strategy fsdp trains in float32 or bfloat16; "
                             "use model.dtype: bfloat16 (or parallel.strategy: ddp)")


def _compute_dtype_here(cfg: TrainConfig) -> str:
    """What ``model.dtype`` computes in on this machine's device (``auto`` on a GPU asks it for bf16)."""
    if cfg.model.dtype != "auto":  # only `auto` depends on the machine
        return compute_dtype(cfg.model.dtype, "cpu")
    device = cfg.model.device
    cuda = torch.cuda.is_available() and (device in ("auto", "cuda") or str(device).startswith("cuda"))
    return compute_dtype("auto", "cuda" if cuda else "cpu", bf16_supported=not cuda or torch.cuda.is_bf16_supported())


def _record_names(path: Path, n: int) -> list[str]:
    """How to name the ``n`` records of a dataset file: ``"<file> line N"`` (JSONL) or ``"<file> record N"``."""
    try:
        names = [where for where, _ in located_records(path)]
    except (OSError, ValueError):
        names = []
    return names if len(names) == n else [f"{path} record {i}" for i in range(1, n + 1)]


def _data_errors(report: CheckReport, split: str, exc: Exception) -> None:
    """A loader's or reader's error: one line per bad record it lists (file, record number, fix)."""
    if isinstance(exc, DatasetError):
        report.errors.extend(f"{split} data: {p}" for p in exc.problems)
    else:
        report.errors.append(f"{split} data: {exc}")


def _image_problem(path: Path) -> tuple[str | None, int, int]:
    """(why the image cannot be trained on, or ``None``; its width; its height)."""
    from PIL import Image

    if not path.is_file():
        return f"image {path} does not exist", 0, 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(path) as im:
                width, height = im.size
                if width * height > (Image.MAX_IMAGE_PIXELS or math.inf):
                    return (f"image {path} is {width}x{height} ({width * height:,} pixels), above PIL's decompression-"
                            f"bomb limit of {Image.MAX_IMAGE_PIXELS:,}; downscale it"), width, height
                im.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        return f"image {path} cannot be decoded: {type(exc).__name__}: {exc}", 0, 0
    return None, width, height


def sample_problem(sample: Sample, task: Any, max_text_chars: int | None = None) -> str | None:
    """Why a sample cannot be trained on (missing, corrupt or huge image, bad box, a text too long), or ``None``."""
    why, width, height = _image_problem(Path(sample.image))
    if why is not None:
        return why
    for other in sample.other_images:  # the unlabelled images of a several-image sample must load too
        why = _image_problem(Path(other))[0]
        if why is not None:
            return why
    try:
        boxes = task.foreground_boxes(sample)
        labels = [str(v) for v in task.foreground_labels(sample)] if max_text_chars else []
    except Exception as exc:  # noqa: BLE001
        return f"its boxes cannot be read: {type(exc).__name__}: {exc}"
    for box in boxes:
        values = [float(v) for v in box]
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            return f"box {list(box)} is not four finite numbers"
        x1, y1, x2, y2 = values
        if x2 <= x1 or y2 <= y1:
            return f"box {values} is inverted or empty (need x1 < x2 and y1 < y2)"
        t = BOX_TOLERANCE_PX
        if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
            return f"box {values} lies outside the {width}x{height} image"
    if max_text_chars:
        texts = [("problem", sample.problem), ("description", sample.description or "")]
        texts += [(f"label {i}", label) for i, label in enumerate(labels)]
        for what, text in texts:
            if len(str(text)) > max_text_chars:
                return (f"its {what} is {len(str(text)):,} characters, above data.max_text_chars "
                        f"({max_text_chars:,}); shorten it or raise the bound")
    return None


def check_dataset(cfg: TrainConfig, task: Any, split: str, path: str, report: CheckReport, *,
                  image_root: str | Path | None = None, source: str | None = None) -> None:
    """Read a dataset file with the task and check every record (see :func:`sample_problem`).

    Every bad record is found, those the task's reader cannot read too (read under
    :func:`~syngrpo.data.files.skipping_bad_records`): ``data.bad_samples: error`` lists each as an error
    naming file and record; ``drop`` notes one line per record it leaves out, then the total.
    ``image_root`` defaults to the split's; ``source`` names the original data of a converted file.
    """
    file = Path(path)
    try:
        with skipping_bad_records() as unreadable:
            samples = task.load(file, image_root=cfg.data.image_root_of(split) if image_root is None else image_root)
    except Exception as exc:  # noqa: BLE001 - a loader's error names file and line already
        _data_errors(report, split, exc)
        return
    total = len(samples) + len(unreadable)
    names = _record_names(file, total)

    def where(i: int, sample: Sample | None = None) -> str:
        origin = sample.meta.get(SOURCE_KEY) if sample is not None else None  # a converted record's original
        return origin or (names[i] if i < len(names) else f"{file} record {i + 1}")

    bad: list[tuple[int, str, Sample | None]] = [(r.index, r.why, None) for r in unreadable]
    skipped = {r.index for r in unreadable}
    place = (i for i in range(total) if i not in skipped)  # each sample's record number
    if samples:
        report.max_images[split] = max(report.max_images.get(split, 1), max(s.num_images for s in samples))
    for i, sample in zip(place, samples, strict=False):
        why = sample_problem(sample, task, cfg.data.max_text_chars)
        if why is not None:
            bad.append((i, why, sample))
    bad.sort(key=lambda b: b[0])
    if not bad:
        report.notes.append(f"{split} data: {total} records in {source or file}, every image, box and text ok")
    elif cfg.data.bad_samples == "drop":
        report.dropped.setdefault(split, set()).update((s.id, s.image) for _, _, s in bad if s is not None)
        lines = [f"{split} data: dropped {where(i, s)}: {why}" for i, why, s in bad]
        lines.append(f"{split} data: dropped {len(bad)} of {total} samples of {file} (data.bad_samples: drop); "
                     f"{total - len(bad)} left")
        report.drops.extend(lines)
        report.notes.extend(lines)
        if len(bad) == total:
            report.errors.append(f"{split} data: every sample of {file} is bad (first: {where(bad[0][0], bad[0][2])}: "
                                 f"{bad[0][1]})")
    else:
        report.errors.extend(f"{split} data: {where(i, s)}: {why}" for i, why, s in bad)
        report.errors.append(f"{split} data: {len(bad)} bad sample(s) of {total} in {file}; fix them, or set "
                             "data.bad_samples: drop to leave them out")


def check_format_dataset(cfg: TrainConfig, task: Any, split: str, path: str, report: CheckReport,
                         registry: Any) -> None:
    """A source in ``data.format``: read by its reader (into a scratch folder), then every sample checked."""
    name, options, fmt_split = cfg.data.format_of(split)
    with tempfile.TemporaryDirectory(prefix="syngrpo-check-") as tmp:
        try:
            converted = materialize_format(registry, name, path, tmp, options=options, split=fmt_split,
                                           image_root=cfg.data.image_root_of(split), task=cfg.data.task)
        except Exception as exc:  # noqa: BLE001 - the reader's error lists every bad record
            _data_errors(report, split, exc)
            return
        check_dataset(cfg, task, split, str(converted), report, image_root=tmp,
                      source=f"{path} (data.format {name}, split {fmt_split})")


def check_hf_dataset(cfg: TrainConfig, split: str, source: str, report: CheckReport) -> None:
    """A Hugging Face dataset: readable, ``data.columns`` names columns it has, and every path-only image exists.

    Embedded images are checked when the run converts the rows into the task's records (the
    conversion writes them out); a hub source is not fetched here.
    """
    if source.startswith(HF_PREFIX):
        report.notes.append(f"{split} data: {source} (hub dataset: read when the run starts)")
        return
    try:
        rows = load_rows(source)
    except Exception as exc:  # noqa: BLE001 - missing extra, unreadable file: the config's error here
        report.errors.append(f"{split} data: {source}: {type(exc).__name__}: {exc}")
        return
    missing = sorted(set(cfg.data.columns.values()) - set(rows.column_names))
    if missing:
        report.errors.append(f"{split} data: data.columns names column(s) {missing} that {source} does not have; "
                             f"its columns: {rows.column_names}")
        return
    try:
        n, problems = image_problems(source, columns=cfg.data.columns, image_root=cfg.data.image_root_of(split))
    except Exception as exc:  # noqa: BLE001 - no image column: the config's error here
        report.errors.append(f"{split} data: {exc}")
        return
    if problems:
        report.errors.extend(f"{split} data: {p}" for p in problems)
    else:
        report.notes.append(f"{split} data: {n} rows in {source}, every path-only image found "
                            "(embedded images checked when converted)")


def check_config(cfg: TrainConfig, registry: Any = None, *, data: bool = True) -> CheckReport:
    """Every check of the module doc, without loading a model; errors are collected, not raised."""
    registry = registry if registry is not None else get_registry()
    report = CheckReport()
    try:
        check_runnable(cfg)
    except ConfigError as exc:
        report.errors.append(str(exc))
    task = None
    reg = _resolve(report, registry, "tasks", cfg.data.task, "data.task")
    if reg is not None:
        try:
            task = reg.factory(**cfg.data.task_options)
            report.notes.append(f"data.task: {cfg.data.task} ok")
        except Exception as exc:  # noqa: BLE001
            report.errors.append(f"data.task_options: {cfg.data.task!r} cannot be built: {exc}")
    for i, term in enumerate(cfg.rewards.terms):
        if is_callable_ref(term.name):  # path/to/file.py:function: import it and check its signature
            try:
                make_reward(registry, term.name, dict(term.options))
                report.notes.append(f"rewards.terms[{i}]: {term.name} ok")
            except (SyngrpoError, ImportError) as exc:
                report.errors.append(f"rewards.terms[{i}]: {exc}")
            continue
        _check_options(report, registry, "rewards", term.name, dict(term.options), f"rewards.terms[{i}]", build=True)
    for name in cfg.logging.trackers:  # their factories only check the library and the options
        if name != "tensorboard":
            _check_options(report, registry, "trackers", name, dict(cfg.logging.tracker_options.get(name, {})),
                           f"logging.trackers ({name})", build=True)
    if cfg.model.family != "auto":
        _resolve(report, registry, "model_families", cfg.model.family, "model.family")
    adv = cfg.algorithm.advantage
    _check_options(report, registry, "advantage_estimators", adv.name, dict(adv.options), "algorithm.advantage",
                   build=True)
    _check_options(report, registry, "policy_losses", cfg.algorithm.policy_loss.name, policy_loss_options(cfg),
                   "algorithm.policy_loss", build=True)
    _check_options(report, registry, "rollout_engines", cfg.rollout.engine, dict(cfg.rollout.engine_options),
                   "rollout.engine", build=False, given=("bundle",))
    if cfg.rollout.importance_correction.enabled:
        _check_correction(cfg, registry, report)
    if cfg.synthesis.enabled:
        _check_synthesis(cfg, registry, report)
    _check_parallel(cfg, report)
    if data and task is not None:
        for split, path in (("train", cfg.data.train), ("eval", cfg.eval.split or cfg.data.eval)):
            if path and cfg.data.format_of(split)[0]:
                check_format_dataset(cfg, task, split, path, report, registry)
            elif path and is_dataset_source(path):
                check_hf_dataset(cfg, split, path, report)
            elif path:
                check_dataset(cfg, task, split, path, report)
        if not cfg.data.train:  # toy data, drawn when the run starts: its images per sample are an option
            report.max_images.setdefault("train", int(cfg.data.toy.options.get("images_per_sample", 1) or 1))
        _check_image_count(cfg, registry, report)
    return report


def _check_image_count(cfg: TrainConfig, registry: Any, report: CheckReport) -> None:
    """Data with several images per sample needs a family that takes them: refused here, before any model loads.

    The family is ``model.family``, else the one of the policy's ``config.json`` ``model_type`` (a
    directory or ``policy: tiny``); a hub id's family is known only when it loads (where
    :func:`syngrpo.models.prompts.encode_prompts` refuses the same way)."""
    most = max(report.max_images.values(), default=1)
    if most <= 1:
        return
    import json

    from syngrpo.config.learning import DEFAULT_TINY_FAMILY
    from syngrpo.models.family import family_for_model_type, get_family

    splits = ", ".join(f"{k} {v}" for k, v in sorted(report.max_images.items()) if v > 1)
    try:
        if cfg.model.family != "auto":
            family = get_family(cfg.model.family, registry)
        elif cfg.model.policy == "tiny":
            family = get_family(DEFAULT_TINY_FAMILY, registry)
        elif (Path(cfg.model.policy) / "config.json").is_file():
            model_type = json.loads((Path(cfg.model.policy) / "config.json").read_text()).get("model_type", "")
            family = family_for_model_type(model_type, registry)
        else:
            report.notes.append(f"data: up to {most} images per sample ({splits}); the model family of "
                                f"{cfg.model.policy} is checked to take them when it loads")
            return
        family.check_image_count(most, f"the data (the most images per sample: {splits})")
    except (ConfigError, OSError, ValueError) as exc:
        report.errors.append(f"model.family: {exc}")
        return
    report.notes.append(f"data: up to {most} images per sample ({splits}); model family {family.name} takes them")
