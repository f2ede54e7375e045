"""``syngrpo.api`` is the plugin author's surface, and the 0.1 module paths keep working until 0.3.

Each test can fail for the bug it names: a name missing from the surface or its docs, an import of the
surface that drags in torch, an old path that loads a second copy of a module (two ``Task`` classes: an
``isinstance`` that silently fails), an alias that does not warn, and a 0.1 plugin that no longer trains.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import syngrpo.api as api
from syngrpo._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "fixtures" / "syngrpo-legacy-v01"


def test_every_api_name_resolves_to_the_object_in_its_module():
    for name, module in api.EXPORTS.items():
        assert getattr(api, name) is getattr(importlib.import_module(module), name), name
    assert sorted(api.__all__) == sorted(api.EXPORTS)
    with pytest.raises(AttributeError, match="docs/api/index.md"):
        api.NotAName  # noqa: B018


def test_importing_the_api_does_not_import_torch():
    """Entry-point modules may import from syngrpo.api: loading plugins must stay cheap (no torch)."""
    code = "import sys, syngrpo.api; from syngrpo.api import Task, hookimpl, Sample; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def api_index_table() -> str:
    """docs/api/index.md's table, from ``syngrpo.api.EXPORTS`` and the group comments above its entries."""
    source = (ROOT / "syngrpo" / "api.py").read_text(encoding="utf-8")
    body = source[source.index("EXPORTS: dict[str, str] = {"):]
    body = body[:body.index("\n}\n")]
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for line in body.splitlines()[1:]:
        if m := re.match(r"\s*# (.+)$", line):
            groups.append((m.group(1), []))
        elif m := re.match(r'\s*"(\w+)": "([\w.]+)",', line):
            groups[-1][1].append((m.group(1), m.group(2)))
    rows = ["| what | names | where they live |", "|---|---|---|"]
    for title, items in groups:
        modules = sorted({m for _, m in items})
        rows.append(f"| {title} | {', '.join(f'`{n}`' for n, _ in items)} | {', '.join(f'`{m}`' for m in modules)} |")
    return "\n".join(rows)


def test_the_api_index_lists_every_exported_name_where_it_lives():
    """On failure, paste the expected table (printed in the assertion) into docs/api/index.md."""
    text = (ROOT / "docs" / "api" / "index.md").read_text(encoding="utf-8")
    start = text.index("| what | names | where they live |")
    table = text[start:text.index("\n\n", start)]
    expected = api_index_table()
    assert table == expected, "docs/api/index.md's table should be:\n" + expected


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_new_module_and_warns_with_the_new_path(old):
    code = f"""
import importlib, sys, warnings
new = importlib.import_module({MOVED[old]!r})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mod = importlib.import_module({old!r})
assert mod is new, (mod, new)
assert sys.modules[{old!r}] is new
messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
assert any({MOVED[old]!r} in m for m in messages), messages
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_every_moved_target_exists_and_no_old_path_is_still_a_file():
    for old, new in MOVED.items():
        assert importlib.util.find_spec(new) is not None, new
        rel = Path(*old.split("."))
        assert not (ROOT / rel.with_suffix(".py")).exists() and not (ROOT / rel / "__init__.py").exists(), old


def test_a_plugin_written_for_0_1_passes_its_own_tests_unchanged():
    """The frozen 0.1 counting plugin (tests/fixtures/syngrpo-legacy-v01, old import paths) runs its own suite."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                          "default::DeprecationWarning"], cwd=LEGACY, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout


def test_a_plugin_written_for_0_1_trains_two_steps_and_is_told_the_new_paths(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(LEGACY))
    for name in [m for m in sys.modules if m.startswith("syngrpo_legacy_counting")]:
        monkeypatch.delitem(sys.modules, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from syngrpo_legacy_counting import plugin

        from syngrpo.config import QUICKSTART_CONFIG, load_train_config
        from syngrpo.testing import registry_with
        from syngrpo.train.trainer import Trainer

        registry = registry_with(plugin, autoload=True)
        cfg = load_train_config(QUICKSTART_CONFIG, [  # the shipped tiny policy, plain GRPO on the legacy task
            "data.task=legacy_counting", "data.toy.n_train=4", "data.toy.n_eval=2", "data.toy.image_size=56",
            "synthesis.mode=off", "synthesis.spawn_server=false", "rollout.response_format=syn", "rollout.num_generations=2",
            "rollout.max_new_tokens=8", "optim.batch_size=2", "optim.max_steps=2", "eval.at_start=false",
            "eval.at_end=false", "logging.progress=false", "logging.plots=false", "logging.gallery=false",
            "logging.trackers=[]", "logging.save_every=0", "data.toy.options={}",
        ])
        with Trainer(cfg, tmp_path / "run", registry=registry) as trainer:
            summary = trainer.train()
    assert summary["steps"] == 2
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, DeprecationWarning))
    assert "syngrpo.perception.task" in messages and "syngrpo.data.files" in messages
