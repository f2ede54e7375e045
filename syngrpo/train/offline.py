"""Offline generation: the "GRPO + Offline Generation" baseline's data (paper Table 1).

The paper's baseline has GPT-4o write new-image descriptions *before* training, synthesizes the
images offline, then runs plain GRPO on originals + synthesized samples.  :func:`run_offline` does
that for any task and describer (``syngrpo synth --offline -c CONFIG --variants K --out DIR``):

1. the originals: ``offline.data`` (default ``data.train``; toy data when neither is set), at most
   ``offline.max_samples`` of them (default ``data.max_train_samples``), drawn as training draws them;
2. ``K`` descriptions per original from the describer plugin ``offline.describer``;
3. one job per description through the data server of ``synthesis``, connected as the trainer connects
   (:func:`syngrpo.synthesis.connect.connect`: ``transport``, ``servers`` or ``spawn_server``, ``token``;
   the same segmenter / synthesizer / label check as online synthesis), in waves of
   :data:`SUBMIT_WAVE` that fit the server's queue, within ``offline.timeout_s`` in all;
4. ``DIR/images/`` (the synthesized images), ``DIR/train.jsonl`` (originals + synthesized samples,
   each synthesized one with ``source_id``, ``generation: 1`` and its ``description``), in the task's
   own format, and ``DIR/offline.json`` (what happened).  Point ``data.train`` at ``DIR/train.jsonl``
   and train with ``synthesis.mode: off``.

A job that fails (the label check, the synthesizer) leaves its original alone; missing descriptions
and failed jobs are counted in ``offline.json`` and printed.
"""

from __future__ import annotations

import io
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from syngrpo.config import TrainConfig
from syngrpo.data.images import load_rgb
from syngrpo.errors import ConfigError
from syngrpo.perception.geometry import ImageTransform
from syngrpo.plugins import get_registry
from syngrpo.synthesis.client import png_bytes
from syngrpo.synthesis.connect import connect, finds_its_server, is_in_process, names_no_server
from syngrpo.synthesis.describers import DescribeRequest
from syngrpo.synthesis.transport import SynthesisJob, TransportError
from syngrpo.train.data import load_split
from syngrpo.types import Sample

#: requests handed to the describer at once (progress is printed between chunks)
DESCRIBE_CHUNK = 16
#: jobs in flight at once: under the data server's default queue size (64), so no submission is refused
SUBMIT_WAVE = 32


@dataclass
class OfflineReport:
    """What one offline run did (also written to ``DIR/offline.json``)."""

    originals: int = 0
    variants: int = 0
    describer: str = ""
    descriptions: int = 0
    missing_descriptions: int = 0
    submitted: int = 0
    done: int = 0
    failed: int = 0
    unfinished: int = 0
    dataset: str = ""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))[:80]


def originals_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its ``data`` section pointing at the originals ``offline`` names."""
    off = cfg.offline
    data = cfg.data.model_copy(update={
        "train": off.data if off.data is not None else cfg.data.train,
        "image_root": off.image_root if off.image_root is not None else cfg.data.image_root,
        "max_train_samples": off.max_samples if off.max_samples is not None else cfg.data.max_train_samples,
    })
    return cfg.model_copy(update={"data": data})


def run_offline(cfg: TrainConfig, out_dir: str | Path, *, variants: int | None = None, registry: Any = None,
                transport: Any = None, describer: Any = None, say: Callable[[str], None] = print) -> OfflineReport:
    """Describe, synthesize and write the offline dataset (module docstring); returns the report."""
    t0 = time.perf_counter()
    registry = registry or get_registry()
    off = cfg.offline
    k = int(variants if variants is not None else off.variants)
    if k < 1:
        raise ConfigError(f"--variants must be at least 1, got {k}")
    if transport is None and names_no_server(cfg.synthesis, is_in_process(registry, cfg.synthesis.transport),
                                             finds_its_server(registry, cfg.synthesis.transport)):
        raise ConfigError("offline generation sends its jobs to a data server: set synthesis.servers (URLs of "
                          "`syngrpo serve`), synthesis.spawn_server: true, or an in-process transport "
                          "(synthesis.transport: inprocess)")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    report = OfflineReport(variants=k, describer=off.describer)

    # everything that can be refused is built before the first description is paid for
    task = registry.create("tasks", cfg.data.task, **cfg.data.task_options)
    describer = describer if describer is not None else registry.create("describers", off.describer,
                                                                         **off.describer_options)
    originals = load_split(originals_config(cfg), task, "train", out)
    report.originals = len(originals)
    # the run's own link (syngrpo.synthesis.connect: also when synthesis.mode is off, since plain GRPO trains
    # on the result), closed at the end with the server it may have spawned; a given transport stays open
    link = connect(cfg.synthesis, registry, server_dir=out / "server", say=say) if transport is None else None
    transport = link.transport if link is not None else transport
    try:
        # 1. descriptions
        descriptions: list[list[str]] = []
        for start in range(0, len(originals), DESCRIBE_CHUNK):
            chunk = originals[start : start + DESCRIBE_CHUNK]
            requests = [DescribeRequest(image=load_rgb(s.image), question=task.question(s),
                                        labels=task.foreground_labels(s), n=k,
                                        seed=cfg.seed, sample_id=s.id) for s in chunk]
            got = describer.describe(requests)
            if len(got) != len(chunk):
                raise RuntimeError(f"describer {off.describer!r} returned {len(got)} lists for {len(chunk)} images")
            descriptions.extend([str(d).strip() for d in ds][:k] for ds in got)
            say(f"described {min(start + len(chunk), len(originals))}/{len(originals)} images")
        report.descriptions = sum(len(d) for d in descriptions)
        report.missing_descriptions = k * len(originals) - report.descriptions

        # 2. one job per description, sent in waves that fit the server's queue, each awaited
        planned: list[tuple[SynthesisJob, Sample, int, str]] = []
        for sample, ds in zip(originals, descriptions, strict=True):
            if not ds:
                continue
            png, _, _ = png_bytes(sample.image)
            boxes = [tuple(float(v) for v in b) for b in task.foreground_boxes(sample)]
            for v, description in enumerate(ds):
                key = f"offline-{_safe(sample.id)}-{v}-{zlib.crc32(description.encode()):08x}"
                job = SynthesisJob(key=key, image_png=png, boxes=boxes,  # type: ignore[arg-type]
                                   labels=task.foreground_labels(sample), description=description,
                                   options=dict(cfg.synthesis.job_options),
                                   seed=zlib.crc32(f"{cfg.seed}/{sample.id}/{v}".encode()) & 0x7FFFFFFF)
                planned.append((job, sample, v, description))
        say(f"synthesizing {len(planned)} images (at most {off.timeout_s:.0f} s in all)")
        deadline = time.monotonic() + off.timeout_s
        synthesized: list[Sample] = []
        for start in range(0, len(planned), SUBMIT_WAVE):
            wave = planned[start : start + SUBMIT_WAVE]
            sent: dict[str, tuple[Sample, int, str]] = {}
            for job, sample, v, description in wave:
                try:
                    transport.submit(job)
                except TransportError as exc:
                    report.failed += 1
                    report.errors.append(f"{sample.id} #{v}: not submitted: {exc}")
                    continue
                sent[job.key] = (sample, v, description)
            report.submitted += len(sent)
            results = transport.wait(list(sent), max(0.0, deadline - time.monotonic())) if sent else []
            seen: set[str] = set()
            for result in results:
                if result.key not in sent or result.key in seen:
                    continue
                seen.add(result.key)
                sample, v, description = sent[result.key]
                if result.state != "done" or not result.image_png:
                    report.failed += 1
                    report.errors.append(f"{sample.id} #{v}: {result.state}: {result.error or 'no image'}")
                    continue
                synthesized.append(_new_sample(task, sample, v, description, result.image_png, out, off.describer))
                report.done += 1
            report.unfinished += len(sent) - len(seen)
            say(f"synthesized {report.done}/{len(planned)} ({report.failed} failed, {report.unfinished} unfinished)")
    finally:
        if link is not None:
            link.close()
        close = getattr(describer, "close", None)
        if callable(close):
            close()

    dataset = out / "train.jsonl"
    task.save(list(originals) + synthesized, dataset)
    report.dataset = str(dataset)
    report.seconds = time.perf_counter() - t0
    (out / "offline.json").write_text(json.dumps(asdict(report), indent=1))
    say(f"wrote {dataset}: {len(originals)} originals + {len(synthesized)} synthesized "
        f"({report.failed} failed, {report.unfinished} unfinished, {report.missing_descriptions} descriptions missing)")
    return report


def _new_sample(task: Any, base: Sample, variant: int, description: str, png: bytes, out: Path,
                describer: str) -> Sample:
    """The original's labels on the synthesized image (mapped when the server changed the size)."""
    path = out / "images" / f"{_safe(base.id)}~offline{variant}.png"
    with Image.open(io.BytesIO(png)) as im:
        width, height = im.size
        im.convert("RGB").save(path, "PNG")
    sample = base
    if (width, height) != (base.width, base.height):
        sample = task.transform_sample(base, ImageTransform.resize(base.width, base.height, width, height), str(path))
    return sample.evolve(id=f"{base.id}~offline{variant}", image=str(path.resolve()), width=width, height=height,
                         source_id=base.id, generation=1, description=description,
                         meta={**sample.meta, "offline": {"variant": variant, "describer": describer}})
