"""Entry-point module of the REC task (``syngrpo`` group, name ``rec``): the task, its dataset formats and benchmarks.

Kept import-light: the classes are imported only when a config or a command asks for them.
"""

from __future__ import annotations

from typing import Any

from syngrpo.hookspecs import hookimpl


def _rec_task(**options: Any):
    from tasks_rec.task import RecTask

    return RecTask(**options)


@hookimpl
def register_tasks(register):
    register("rec", _rec_task,
             description="Referring expression comprehension: one box per expression; reward IoU (eq. 2), metric Acc@0.5")


def _format(cls: str, **preset: Any):
    def factory(**options: Any):
        from tasks_rec import formats

        return getattr(formats, cls)(**{**preset, **options})

    return factory


@hookimpl
def register_dataset_formats(register):
    register("vlmr1_rec", _format("VlmR1Rec"),
             description="VLM-R1's REC files (rec_jsons_processed JSON lists, training JSONL, conversations)")
    register("refer", _format("Refer"),
             description="the refer API's refs(<split_by>).p + instances.json (RefCOCO/+/g); option dataset, split_by")
    register("refcoco", _format("Refer", dataset="refcoco"), description="RefCOCO (refer, UNC splits)")
    register("refcocop", _format("Refer", dataset="refcoco+"), description="RefCOCO+ (refer, UNC splits)")
    register("refcocog", _format("Refer", dataset="refcocog"), description="RefCOCOg (refer, UMD splits)")
    register("lisa", _format("ReasonSegLisa"),
             description="LISA's ReasonSeg folders as grounding (LISA-Grounding): the box of the target polygons")


def _benchmark(name: str):
    def factory():
        from tasks_rec.benchmarks import BENCHMARKS

        return BENCHMARKS[name]()

    return factory


@hookimpl
def register_benchmarks(register):
    for name, what in (("refcoco_val", "RefCOCO val"), ("refcocop_val", "RefCOCO+ val"),
                       ("refcocog_val", "RefCOCOg val"), ("lisa_test", "LISA-Grounding test")):
        register(name, _benchmark(name),
                 description=f"{what}, Table 1: VLM-R1's protocol (2,000 records shuffled with seed 42, greedy, "
                             "Acc@0.5 = IoU > 0.5)")
