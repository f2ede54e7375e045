"""Every installed task keeps the Task contract (syngrpo.testing.check_task_contract).

The list is read from the registry, so a task plugin installed in the
environment (the counting example in CI) is checked too.  The three built-in
tasks are always listed: one that is not registered is reported as skipped
rather than silently missing from the run.
"""

from __future__ import annotations

import pytest

from syngrpo.plugins import get_registry
from syngrpo.testing import check_task_contract

BUILTIN_TASKS = ("rec", "ovd", "isr")
INSTALLED = get_registry(refresh=True).names("tasks")


@pytest.mark.parametrize("name", sorted(set(BUILTIN_TASKS) | set(INSTALLED)))
def test_task_keeps_the_contract(name, tmp_path):
    registry = get_registry()
    if name not in registry.names("tasks"):
        pytest.skip(f"task {name!r} is not registered yet")
    task = registry.create("tasks", name)
    assert task.name == name, f"the task registered as {name!r} calls itself {task.name!r}"
    report = check_task_contract(task, tmp_path)
    assert report.skipped == {}, f"parts of the contract could not be checked: {report.skipped}"


def test_the_contract_check_catches_a_task_that_misreads_its_own_answers(tmp_path):
    from syngrpo.testing import ContractError
    from tasks_isr.task import IsrTask

    class OffByOne(IsrTask):
        def parse_answer(self, text):
            objects = super().parse_answer(text)
            return [{**o, "bbox_2d": [v + 3 for v in o["bbox_2d"]]} for o in objects] if objects else objects

    with pytest.raises(ContractError, match="reference answer"):
        check_task_contract(OffByOne(), tmp_path)


def test_the_contract_check_catches_a_parser_that_raises(tmp_path):
    from syngrpo.testing import ContractError
    from tasks_isr.task import IsrTask

    class Fragile(IsrTask):
        def parse_answer(self, text):
            if text is not None and text.startswith("[1"):
                raise ValueError("boom")
            return super().parse_answer(text)

    with pytest.raises(ContractError, match="parse_answer.*raised ValueError"):
        check_task_contract(Fragile(), tmp_path)


def test_the_contract_check_catches_a_transform_that_forgets_the_scale(tmp_path):
    from syngrpo.testing import ContractError
    from tasks_isr.task import IsrTask

    class NoScale(IsrTask):
        def transform_solution(self, solution, transform):
            return [dict(o) for o in solution]

    with pytest.raises(ContractError, match="frame"):
        check_task_contract(NoScale(), tmp_path)


def test_the_contract_check_catches_labels_the_data_server_would_refuse(tmp_path):
    from syngrpo.testing import ContractError
    from tasks_isr.refine import IsrRefineTask

    class NoLabels(IsrRefineTask):
        def foreground_labels(self, sample):
            return [""] * len(self.foreground_boxes(sample))

    with pytest.raises(ContractError, match="foreground_labels.*one non-empty label"):
        check_task_contract(NoLabels(), tmp_path)
