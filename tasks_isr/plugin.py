"""Entry-point module of the ISR tasks, ``isr`` and ``isr_refine`` (``isr = "tasks_isr.plugin"`` in the ``syngrpo`` group).

Imports nothing heavy: a task module is imported only when a run asks for its task.
"""

from __future__ import annotations

from typing import Any

from syngrpo.hookspecs import hookimpl


def make_isr_task(**options: Any):
    """Indoor-scene top-view perception: furniture boxes, labels and rotations (OVD reward)."""
    from tasks_isr.task import IsrTask

    return IsrTask(**options)


def make_isr_refine_task(**options: Any):
    """ISR's refinement stage: the current layout in, the refined layout out; S_bbox / S_rotation."""
    from tasks_isr.refine import IsrRefineTask

    return IsrRefineTask(**options)


@hookimpl
def register_tasks(register):
    register("isr", make_isr_task,
             description="indoor-scene top views (perception): furniture boxes, labels, rotations; OVD reward")
    register("isr_refine", make_isr_refine_task,
             description="indoor-scene refinement: current layout in, refined layout out; S_bbox / S_rotation")


def make_3dfront_format(**options: Any):
    """3D-FRONT scenes + 3D-FUTURE models: one top view per room, furniture boxes, labels, rotations."""
    from tasks_isr.formats import ThreeDFront

    return ThreeDFront(**options)


@hookimpl
def register_dataset_formats(register):
    register("3dfront", make_3dfront_format)


def make_3dfront_benchmark():
    """3D-FRONT ISR perception, Table 3: 500 rooms (seed 42), greedy; mAP, GP, GR."""
    from tasks_isr.benchmarks import isr_3dfront

    return isr_3dfront()


@hookimpl
def register_benchmarks(register):
    register("3dfront_isr", make_3dfront_benchmark)
