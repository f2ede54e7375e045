"""Entry-point module of the OVD task (``syngrpo`` group, name ``ovd``): the task, its dataset formats and benchmarks.

Kept import-light: the classes are imported only when a config or a command asks for them.
"""

from __future__ import annotations

from typing import Any

from syngrpo.hookspecs import hookimpl


def _ovd_task(**options: Any):
    from tasks_ovd.task import OvdTask

    return OvdTask(**options)


@hookimpl
def register_tasks(register):
    register("ovd", _ovd_task,
             description="Open-vocabulary detection: JSON list of boxes and labels; reward min(1, N_gt/N_pred)*mAP "
                         "(eq. 3), metrics mAP, GP, GR")


def _format(cls: str, **preset: Any):
    def factory(**options: Any):
        from tasks_ovd import formats

        return getattr(formats, cls)(**{**preset, **options})

    return factory


@hookimpl
def register_dataset_formats(register):
    register("vlmr1_ovd", _format("VlmR1Ovd"), description="VLM-R1's OVD JSONL (conversations, ```json answers)")
    register("coco", _format("Coco"), description="COCO instances_*.json (categories by id, crowd boxes left out)")
    register("coco_filter", _format("Coco", filter="coco_filter"),
             description="COCO val2017 with VLM-R1's COCO_filter rule (no category with more than 10 boxes)")
    register("d3", _format("D3"), description="D3 (described object detection): d3_pkl + d3_images, intra-group")


def _benchmark(name: str):
    def factory():
        from tasks_ovd.benchmarks import BENCHMARKS

        return BENCHMARKS[name]()

    return factory


@hookimpl
def register_benchmarks(register):
    register("coco_filter", _benchmark("coco_filter"),
             description="COCO_filter (val2017), Table 2: mAP, GP, GR with VLM-R1's OVD answer rules, greedy")
    register("d3", _benchmark("d3"), description="D3 (intra-group): mAP, GP, GR with VLM-R1's OVD answer rules, greedy")
