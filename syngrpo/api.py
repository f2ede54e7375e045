"""Everything a plugin author imports, in one place: ``from syngrpo.api import Task, hookimpl, ...``.

The modules behind these names are internal and may move (they did once, in 0.2: docs/architecture.md);
the names here are the stable surface, as ``httpx`` or ``pydantic`` keep theirs in one public module.
Each name is imported on first use (PEP 562), so ``import syngrpo.api`` costs nothing, and a plugin's
entry-point module may import it without pulling in torch: the contracts that need torch (``PolicyBundle``,
``PolicyLoss`` ...) load it only when touched.

``EXPORTS`` below is the whole table, grouped by what a plugin does; docs/api/index.md lists every name
(a test keeps the two equal).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name -> module it lives in, grouped as docs/api/index.md groups them
EXPORTS: dict[str, str] = {
    # registering plugins (docs/hooks/)
    "hookimpl": "syngrpo.hookspecs",
    "get_registry": "syngrpo.plugins",
    "load_callable": "syngrpo.plugins",
    # errors a user can act on
    "SyngrpoError": "syngrpo.errors",
    "ConfigError": "syngrpo.errors",
    "MissingExtraError": "syngrpo.errors",
    "UnknownPluginError": "syngrpo.errors",
    "DuplicateNameError": "syngrpo.errors",
    "require": "syngrpo.errors",
    # the records every part passes around
    "Sample": "syngrpo.types",
    "ParsedResponse": "syngrpo.types",
    "Box": "syngrpo.types",
    # tasks
    "Task": "syngrpo.perception.task",
    "original_frame": "syngrpo.perception.task",
    "split_frames": "syngrpo.perception.task",
    "sample_record": "syngrpo.perception.task",
    "MAX_JOB_LABEL_CHARS": "syngrpo.perception.task",
    # boxes and image transforms
    "ImageTransform": "syngrpo.perception.geometry",
    "iou": "syngrpo.perception.geometry",
    "box_area": "syngrpo.perception.geometry",
    "valid_box": "syngrpo.perception.geometry",
    # reading answers (never raise)
    "unwrap": "syngrpo.perception.answers",
    "json_values": "syngrpo.perception.answers",
    "as_number": "syngrpo.perception.answers",
    "as_box": "syngrpo.perception.answers",
    "find_box": "syngrpo.perception.answers",
    "to_detection": "syngrpo.perception.answers",
    "parse_detections": "syngrpo.perception.answers",
    "BOX_KEYS": "syngrpo.perception.answers",
    "LABEL_KEYS": "syngrpo.perception.answers",
    "NONE_ANSWERS": "syngrpo.perception.answers",
    # the response format
    "build_instruction": "syngrpo.perception.response",
    "parse_response": "syngrpo.perception.response",
    "render_response": "syngrpo.perception.response",
    "format_reward": "syngrpo.perception.response",
    # detection metrics
    "normalize_label": "syngrpo.perception.detection",
    "map_detections": "syngrpo.perception.detection",
    "ovd_reward": "syngrpo.perception.detection",
    "coco_ap": "syngrpo.perception.detection",
    "coco_ap_dataset": "syngrpo.perception.detection",
    "greedy_match": "syngrpo.perception.detection",
    "precision_recall": "syngrpo.perception.detection",
    "precision_recall_dataset": "syngrpo.perception.detection",
    # toy images with exact labels
    "SHAPES": "syngrpo.perception.toyshapes",
    "COLOURS": "syngrpo.perception.toyshapes",
    "ShapeSpec": "syngrpo.perception.toyshapes",
    "DrawnShape": "syngrpo.perception.toyshapes",
    "scene_rng": "syngrpo.perception.toyshapes",
    "place_boxes": "syngrpo.perception.toyshapes",
    "render_scene": "syngrpo.perception.toyshapes",
    # dataset files
    "read_records": "syngrpo.data.files",
    "build_samples": "syngrpo.data.files",
    "write_records": "syngrpo.data.files",
    "write_jsonl": "syngrpo.data.files",
    "resolve_image": "syngrpo.data.files",
    "portable_image_path": "syngrpo.data.files",
    "image_size": "syngrpo.data.files",
    "pop_image_size": "syngrpo.data.files",
    "tidy_number": "syngrpo.data.files",
    "load_rgb": "syngrpo.data.images",
    "located_records": "syngrpo.data.files",
    # dataset formats: the files the field ships, read into a task's records (docs/hooks/dataset_formats.md)
    "DatasetFormat": "syngrpo.data.formats",
    "FormatResult": "syngrpo.data.formats",
    "Problems": "syngrpo.data.formats",
    "RecordProblem": "syngrpo.data.formats",
    "DatasetError": "syngrpo.data.formats",
    "SOURCE_KEY": "syngrpo.data.formats",
    "build_each": "syngrpo.data.formats",
    "read_format": "syngrpo.data.formats",
    "make_format": "syngrpo.data.formats",
    "load_plain_pickle": "syngrpo.data.pickles",
    "shuffled_head": "syngrpo.data.subsets",
    "random_sample": "syngrpo.data.subsets",
    # benchmarks: published evaluation protocols (docs/hooks/benchmarks.md)
    "Benchmark": "syngrpo.perception.benchmark",
    "BenchmarkScore": "syngrpo.perception.benchmark",
    "PaperCell": "syngrpo.perception.benchmark",
    "Protocol": "syngrpo.perception.benchmark",
    # rewards
    "RewardFunction": "syngrpo.perception.rewards",
    "PerResponseReward": "syngrpo.perception.rewards",
    "RewardWarning": "syngrpo.perception.rewards",
    # advantage estimators and policy losses
    "AdvantageEstimator": "syngrpo.algo.losses",
    "PolicyLoss": "syngrpo.algo.losses",
    "GRPOLoss": "syngrpo.algo.losses",
    # synthesis: synthesizers, segmenters, the pipeline the server runs
    "Synthesizer": "syngrpo.synthesis.pipeline",
    "Segmenter": "syngrpo.synthesis.pipeline",
    "SynthesisRequest": "syngrpo.synthesis.pipeline",
    "run_pipeline": "syngrpo.synthesis.pipeline",
    "PipelineItem": "syngrpo.synthesis.pipeline",
    "PipelineOutcome": "syngrpo.synthesis.pipeline",
    "job_options_model": "syngrpo.synthesis.pipeline",
    "check_deadline": "syngrpo.synthesis.pipeline",
    # transports
    "Transport": "syngrpo.synthesis.transport",
    "SynthesisJob": "syngrpo.synthesis.transport",
    "SynthesisResult": "syngrpo.synthesis.transport",
    "TransportError": "syngrpo.synthesis.transport",
    "Unauthorized": "syngrpo.synthesis.transport",
    "JobRejected": "syngrpo.synthesis.transport",
    # describers
    "Describer": "syngrpo.synthesis.describers",
    "DescribeRequest": "syngrpo.synthesis.describers",
    "DescriberError": "syngrpo.synthesis.describers",
    # rollout engines and model families
    "RolloutEngine": "syngrpo.models.rollout",
    "Rollout": "syngrpo.models.rollout",
    "PolicyBundle": "syngrpo.models.prompts",
    "PromptBatch": "syngrpo.models.prompts",
    "ModelFamily": "syngrpo.models.family",
    "CoordinateConvention": "syngrpo.models.family",
    # a rollout engine's memory, declared for `syngrpo plan` (docs/hooks/rollout_engines.md)
    "EngineMemory": "syngrpo.scale.plan",
    "EngineKnob": "syngrpo.scale.plan",
    "MemoryPart": "syngrpo.scale.plan",
    "PlanInputs": "syngrpo.scale.plan",
    "GiB": "syngrpo.scale.plan",
    # trackers
    "Tracker": "syngrpo.rundir.trackers",
}

__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'syngrpo.api' has no attribute {name!r} (its names: docs/api/index.md)")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once resolved, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time every name loads on first use
    from syngrpo.algo.losses import AdvantageEstimator, GRPOLoss, PolicyLoss
    from syngrpo.data.files import (
        build_samples,
        image_size,
        located_records,
        pop_image_size,
        portable_image_path,
        read_records,
        resolve_image,
        tidy_number,
        write_jsonl,
        write_records,
    )
    from syngrpo.data.formats import (
        SOURCE_KEY,
        DatasetError,
        DatasetFormat,
        FormatResult,
        Problems,
        RecordProblem,
        build_each,
        make_format,
        read_format,
    )
    from syngrpo.data.images import load_rgb
    from syngrpo.data.pickles import load_plain_pickle
    from syngrpo.data.subsets import random_sample, shuffled_head
    from syngrpo.errors import (
        ConfigError,
        DuplicateNameError,
        MissingExtraError,
        SyngrpoError,
        UnknownPluginError,
        require,
    )
    from syngrpo.hookspecs import hookimpl
    from syngrpo.models.family import CoordinateConvention, ModelFamily
    from syngrpo.models.prompts import PolicyBundle, PromptBatch
    from syngrpo.models.rollout import Rollout, RolloutEngine
    from syngrpo.perception.answers import (
        BOX_KEYS,
        LABEL_KEYS,
        NONE_ANSWERS,
        as_box,
        as_number,
        find_box,
        json_values,
        parse_detections,
        to_detection,
        unwrap,
    )
    from syngrpo.perception.benchmark import Benchmark, BenchmarkScore, PaperCell, Protocol
    from syngrpo.perception.detection import (
        coco_ap,
        coco_ap_dataset,
        greedy_match,
        map_detections,
        normalize_label,
        ovd_reward,
        precision_recall,
        precision_recall_dataset,
    )
    from syngrpo.perception.geometry import ImageTransform, box_area, iou, valid_box
    from syngrpo.perception.response import build_instruction, format_reward, parse_response, render_response
    from syngrpo.perception.rewards import PerResponseReward, RewardFunction, RewardWarning
    from syngrpo.perception.task import MAX_JOB_LABEL_CHARS, Task, original_frame, sample_record, split_frames
    from syngrpo.perception.toyshapes import (
        COLOURS,
        SHAPES,
        DrawnShape,
        ShapeSpec,
        place_boxes,
        render_scene,
        scene_rng,
    )
    from syngrpo.plugins import get_registry, load_callable
    from syngrpo.rundir.trackers import Tracker
    from syngrpo.scale.plan import EngineKnob, EngineMemory, GiB, MemoryPart, PlanInputs
    from syngrpo.synthesis.describers import Describer, DescribeRequest, DescriberError
    from syngrpo.synthesis.pipeline import (
        PipelineItem,
        PipelineOutcome,
        Segmenter,
        SynthesisRequest,
        Synthesizer,
        check_deadline,
        job_options_model,
        run_pipeline,
    )
    from syngrpo.synthesis.transport import (
        JobRejected,
        SynthesisJob,
        SynthesisResult,
        Transport,
        TransportError,
        Unauthorized,
    )
    from syngrpo.types import Box, ParsedResponse, Sample
