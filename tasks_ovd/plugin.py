"""Entry-point module of the OVD task (``syngrpo`` group, name ``ovd``).

Kept import-light: the task class is imported only when a config asks for it.
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
