"""Entry-point module of the ISR task (``isr = "tasks_isr.plugin"`` in the ``syngrpo`` group).

Imports nothing heavy: the task module is imported only when a run asks for ``isr``.
"""

from __future__ import annotations

from typing import Any

from syngrpo.hookspecs import hookimpl


def make_isr_task(**options: Any):
    """Indoor-scene top-view perception: furniture boxes, labels and rotations (OVD reward)."""
    from tasks_isr.task import IsrTask

    return IsrTask(**options)


@hookimpl
def register_tasks(register):
    register("isr", make_isr_task,
             description="indoor-scene top views: furniture boxes, labels, rotations; OVD reward, S_bbox/S_rotation")
