"""Entry-point module of the REC task (``syngrpo`` group, name ``rec``).

Kept import-light: the task class is imported only when a config asks for it.
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
