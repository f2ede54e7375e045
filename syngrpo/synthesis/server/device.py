"""What runs on a worker's device: its segmenter and synthesizers, one batch at a time, PNG bytes in and out.

Its own module because the same code runs in three places: a worker's thread (``worker_isolation:
thread``), a worker's own process (``process``, what ``syngrpo serve`` runs) and a Ray replica (the
``ray`` backend, :mod:`syngrpo_ray`).  It knows no store, no queue and no event loop: a batch of jobs
comes in (each job's stored input PNG and its request), and for each job either a result PNG and its
keep mask, or the reason it failed, goes out.  The caller writes the files and records the ends, so
the files of a job are written by the one process that owns the store, wherever the pixels were made
(a replica on another host shares no filesystem with the store).

:class:`DeviceSpec` is everything a fresh process needs to build the same plugins (it pickles):
plugin names and options, the label-check settings, and the extra plugin modules to import.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from syngrpo.plugins import Registry, get_registry
from syngrpo.synthesis.pipeline import PipelineItem, run_pipeline
from syngrpo.synthesis.server.calls import load_plugin_modules, make_plugin


class DeviceError(Exception):
    """A device call failed in another process (or replica); the message is the original ``Type: message``."""


class DeviceLost(Exception):
    """The process (or Ray replica) holding a device died during a call: its jobs go back to the queue."""


@dataclass
class DeviceJob:
    """One job as a device sees it: its input image (PNG bytes, as stored) and its request."""

    job_id: str
    input_png: bytes
    boxes: list[list[float]]
    labels: list[str]
    description: str
    seed: int
    options: dict[str, Any]
    synthesizer: str


@dataclass
class DeviceOutcome:
    """One job's end on the device: the new image and its keep mask (PNG bytes), or the error."""

    error: str | None = None
    result_png: bytes | None = None
    mask_png: bytes | None = None


@dataclass(frozen=True)
class DeviceSpec:
    """How to build a device's plugins, in this process or another one (a picklable value)."""

    device: str
    segmenter: str
    segmenter_options: dict[str, Any] = field(default_factory=dict)
    #: every synthesizer a job may name, with its options; the default first
    synthesizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_synthesizer: str = "procedural"
    mask_threshold: int = 128
    min_foreground_fraction: float = 0.05
    min_label_coverage: float = 0.25
    max_label_edge_gap: float = 0.1
    #: the label check's segmenter (None: ``segmenter``) and its options
    label_segmenter: str | None = None
    label_segmenter_options: dict[str, Any] = field(default_factory=dict)
    min_label_object_coverage: float = 0.8
    #: extra plugin modules (the server config's ``plugins:``) a fresh process imports
    plugins: tuple[str, ...] = ()
    #: how much a worker process lowers its CPU priority (``worker_nice``); a thread worker ignores it
    nice: int = 0

    @classmethod
    def from_config(cls, config: Any, device: str) -> DeviceSpec:
        """The spec of one worker of a :class:`~syngrpo.synthesis.server.config.ServerConfig`."""
        return cls(device=device, segmenter=config.segmenter, segmenter_options=dict(config.segmenter_options),
                   synthesizers=config.served_synthesizers(), default_synthesizer=config.synthesizer,
                   mask_threshold=config.mask_threshold, min_foreground_fraction=config.min_foreground_fraction,
                   min_label_coverage=config.min_label_coverage, max_label_edge_gap=config.max_label_edge_gap,
                   label_segmenter=config.label_segmenter,
                   label_segmenter_options=dict(config.label_segmenter_options),
                   min_label_object_coverage=config.min_label_object_coverage, plugins=tuple(config.plugins),
                   nice=int(getattr(config, "worker_nice", 0)))


class DeviceModels:
    """A device's segmenter and synthesizers, created on first use (loading a model takes time)."""

    def __init__(self, spec: DeviceSpec, registry: Registry | None = None) -> None:
        self.spec = spec
        if registry is None:
            registry = get_registry(load_plugin_modules(list(spec.plugins))) if spec.plugins else get_registry()
        self.registry = registry
        self._segmenter: Any = None
        self._label_segmenter: Any = None
        self._synthesizers: dict[str, Any] = {}

    def segmenter(self) -> Any:
        if self._segmenter is None:
            s = self.spec
            self._segmenter = make_plugin(self.registry, "segmenters", s.segmenter, s.segmenter_options, s.device)
        return self._segmenter

    def label_segmenter(self) -> Any:
        """The label check's segmenter: the job's own unless the config names another."""
        s = self.spec
        if s.label_segmenter is None:
            return self.segmenter()
        if self._label_segmenter is None:
            self._label_segmenter = make_plugin(self.registry, "segmenters", s.label_segmenter,
                                                s.label_segmenter_options, s.device)
        return self._label_segmenter

    def synthesizer(self, name: str) -> Any:
        if name not in self._synthesizers:
            if name not in self.spec.synthesizers:
                raise KeyError(f"synthesizer {name!r} is not served here (served: {sorted(self.spec.synthesizers)})")
            opts = self.spec.synthesizers[name]
            self._synthesizers[name] = make_plugin(self.registry, "synthesizers", name, opts, self.spec.device)
        return self._synthesizers[name]

    def load(self) -> None:
        """Create the segmenter and the default synthesizer now (a worker does at start-up)."""
        self.segmenter()
        self.label_segmenter()
        self.synthesizer(self.spec.default_synthesizer)

    def run(self, jobs: list[DeviceJob]) -> list[DeviceOutcome]:
        """The pipeline over one batch (jobs of one synthesizer); one outcome per job, in order.

        A failing call fails its own jobs (a failing batch is retried job by job inside
        :func:`~syngrpo.synthesis.pipeline.run_pipeline`); an exception here (an extra synthesizer
        that cannot be created) fails the whole batch, and the caller says so for each job.
        """
        items = []
        for job in jobs:
            with Image.open(io.BytesIO(job.input_png)) as im:
                image = im.convert("RGB")
            items.append(PipelineItem(image, [tuple(b) for b in job.boxes], job.labels, job.description,
                                      job.seed, dict(job.options)))
        s = self.spec
        outcomes = run_pipeline(items, segmenter=self.segmenter(), synthesizer=self.synthesizer(jobs[0].synthesizer),
                                mask_threshold=s.mask_threshold, min_foreground_fraction=s.min_foreground_fraction,
                                min_label_coverage=s.min_label_coverage, max_label_edge_gap=s.max_label_edge_gap,
                                label_segmenter=self.label_segmenter(),
                                min_label_object_coverage=s.min_label_object_coverage)
        out = []
        for outcome in outcomes:
            if not outcome.ok:
                out.append(DeviceOutcome(error=outcome.error or "synthesis produced no image"))
                continue
            assert outcome.image is not None and outcome.keep_mask is not None
            out.append(DeviceOutcome(result_png=png(outcome.image), mask_png=png(outcome.keep_mask)))
        return out


def png(image: Image.Image) -> bytes:
    """PNG bytes of an image, fast to write (results are re-read, never archived at this level)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
