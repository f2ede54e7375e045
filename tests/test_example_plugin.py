"""The worked example package (examples/syngrpo-counting) is found and used through its entry point alone.

CI installs it first (``pip install -c constraints-cpu.txt -e examples/syngrpo-counting``);
nothing in syngrpo names it, so these tests prove that a third-party package
plugs in through the ``syngrpo`` entry-point group.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from syngrpo.plugins import get_registry

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("syngrpo_counting") is None,
    reason="the example plugin is not installed: pip install -c constraints-cpu.txt -e examples/syngrpo-counting",
)


def test_counting_is_registered_by_the_syngrpo_counting_distribution():
    registry = get_registry(refresh=True)
    entry = registry.get("tasks", "counting")
    assert entry.distribution == "syngrpo-counting"
    assert entry.plugin == "counting"  # the entry-point name
    assert entry.version


def test_counting_toy_data_scores_its_own_reference_answers_at_one(tmp_path):
    task = get_registry(refresh=True).create("tasks", "counting")
    samples = task.make_toy_dataset(tmp_path, n=5, seed=0)
    parsed = [task.parse_answer(str(s.solution)) for s in samples]
    assert [task.accuracy(p, s) for p, s in zip(parsed, samples, strict=True)] == [1.0] * 5
    assert task.evaluate(parsed, samples) == {"accuracy": 1.0}
    assert [task.accuracy(p + 1, s) for p, s in zip(parsed, samples, strict=True)] == [0.0] * 5


def test_plugins_cli_lists_the_builtin_tasks_and_the_example_task():
    out = subprocess.run([sys.executable, "-m", "syngrpo.cli", "plugins", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tasks = {e["name"]: e["distribution"] for e in json.loads(out.stdout)["tasks"]}
    assert tasks.get("counting") == "syngrpo-counting"
    assert {"rec", "ovd", "isr"} <= set(tasks), tasks


def test_registry_with_autoload_accepts_a_plugin_its_entry_point_already_loaded():
    """docs/extending.md's test snippet works whether or not the plugin's package is installed."""
    from syngrpo_counting import plugin

    from syngrpo.testing import registry_with

    registry = registry_with(plugin, autoload=True)
    assert registry.get("tasks", "counting").distribution == "syngrpo-counting"
    assert {"rec", "counting"} <= set(registry.names("tasks"))


def test_counting_tells_the_data_server_the_shape_of_each_kept_box(tmp_path):
    task = get_registry(refresh=True).create("tasks", "counting")
    sample = task.make_toy_dataset(tmp_path, n=1, seed=3)[0]
    labels = task.foreground_labels(sample)
    assert labels == [sample.meta["shape"]] * len(task.foreground_boxes(sample))
    assert all(label != task.question(sample) for label in labels)
