"""Entry-point module: ``counting = "syngrpo_counting.plugin"`` in the ``syngrpo`` group.

syngrpo imports this module at every start (``syngrpo --help`` included), so it
imports nothing but the hook marker; the task module is imported only when a
run asks for the ``counting`` task.
"""

from __future__ import annotations

from typing import Any

from syngrpo.api import hookimpl


def make_counting_task(**options: Any):
    """Count the shapes of one kind in a picture; the answer is an integer."""
    from syngrpo_counting.task import CountingTask

    return CountingTask(**options)


@hookimpl
def register_tasks(register):
    register("counting", make_counting_task, description="count the shapes of one kind; answer an integer")
