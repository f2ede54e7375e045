"""The plugin manager: discovery by entry point, clear errors, debugging switches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from syngrpo.errors import DuplicateNameError, UnknownPluginError
from syngrpo.hookspecs import hookimpl
from syngrpo.plugins import KINDS, build_registry, get_registry, make_plugin_manager
from syngrpo.testing import registry_with


class _TaskA:
    @hookimpl
    def register_tasks(self, register):
        register("dup", lambda: "a", description="first")


class _TaskB:
    @hookimpl
    def register_tasks(self, register):
        register("dup", lambda: "b", description="second")


class _Misspelt:
    @hookimpl
    def register_task(self, register):  # missing the final "s"
        pass


def test_duplicate_names_name_both_providers():
    pm = make_plugin_manager([_TaskA(), _TaskB()], autoload=False)
    with pytest.raises(DuplicateNameError) as exc:
        build_registry(pm)
    msg = str(exc.value)
    assert "'dup'" in msg and "_TaskA" in msg and "_TaskB" in msg


def test_misspelt_hook_implementation_is_an_error_not_a_silent_no_op():
    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError):
        make_plugin_manager([_Misspelt()], autoload=False)


def test_unknown_name_lists_installed_names_and_suggests_the_close_one():
    registry = build_registry(make_plugin_manager([_TaskA()], autoload=False))
    with pytest.raises(UnknownPluginError) as exc:
        registry.get("tasks", "dupp")
    msg = str(exc.value)
    assert "no task named 'dupp'" in msg
    assert "Installed tasks: dup" in msg
    assert "Did you mean 'dup'" in msg
    assert "pip install" in msg


def test_directly_registered_plugin_is_created_with_options():
    class P:
        @hookimpl
        def register_rewards(self, register):
            register("const", lambda value=1.0: value)

    registry = get_registry([P()])
    assert registry.create("rewards", "const", value=0.25) == 0.25
    entry = registry.as_json()["rewards"]
    assert {"name": "const", "distribution": "(registered directly)"}.items() <= next(
        e for e in entry if e["name"] == "const"
    ).items()


def test_builtin_tasks_are_found_through_the_entry_point_group():
    registry = get_registry(refresh=True)
    dists = {e["name"]: e["distribution"] for e in registry.as_json()["tasks"]}
    for name in ("rec", "ovd", "isr"):
        assert dists.get(name) == "syngrpo", f"task {name!r} not registered by the syngrpo distribution: {dists}"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "syngrpo.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_plugins_json_is_keyed_by_kind_and_names_the_distribution():
    out = _cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(KINDS) <= set(data)
    names = {e["name"] for e in data["tasks"]}
    assert {"rec", "ovd", "isr"} <= names
    assert all(e["distribution"] for kind in data.values() for e in kind)


def test_disable_autoload_switch_loads_no_entry_points():
    out = _cli("plugins", "--json", env={"SYNGRPO_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert out.returncode == 0, out.stderr
    assert all(v == [] for v in json.loads(out.stdout).values())


def test_trace_switch_prints_each_hook_call():
    out = _cli("plugins", "--json", env={"SYNGRPO_TRACE_HOOKS": "1"})
    assert out.returncode == 0
    assert "[syngrpo hook] register_tasks -> " in out.stderr


def test_importing_the_cli_pulls_in_no_heavy_library():
    code = (
        "import sys, syngrpo.cli, syngrpo.plugins; syngrpo.cli.build_parser(); "
        "syngrpo.plugins.get_registry(); "
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_plugins_listing_keeps_whole_descriptions_when_piped(capsys):
    from syngrpo.cli import main

    long = "a description much longer than sixty characters, " * 3
    registry = registry_with(_LongDescriptionPlugin(long))
    from syngrpo import plugins as plugins_module

    saved = plugins_module._DEFAULT
    plugins_module._DEFAULT = registry
    try:
        assert main(["plugins"]) == 0
        assert main(["plugins", "--wide"]) == 0
    finally:
        plugins_module._DEFAULT = saved
    out = capsys.readouterr().out
    assert out.count(long.strip()) == 2  # captured output is not a terminal: nothing cut


class _LongDescriptionPlugin:
    def __init__(self, text):
        self.text = text

    @hookimpl
    def register_rewards(self, register):
        register("wordy", lambda **o: None, description=self.text.strip())
