"""The one place that owns the plugin manager.

Plugins are found only through the ``syngrpo`` entry-point group, the built-in
ones included: the core never imports a plugin module by name.  Tests and
notebooks can add a plugin object directly with :func:`get_registry` and
``extra_plugins``.

Environment switches (for debugging plugins, as pytest and datasette offer):

``SYNGRPO_DISABLE_PLUGIN_AUTOLOAD=1``
    load no entry points at all (only plugins registered explicitly).
``SYNGRPO_TRACE_HOOKS=1``
    print every hook call and its result to stderr.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from syngrpo import hookspecs
from syngrpo.errors import ConfigError, DuplicateNameError, UnknownPluginError

ENTRY_POINT_GROUP = "syngrpo"

#: kind name (as in ``syngrpo plugins --json``) -> hook that registers it
KINDS: dict[str, str] = {
    "tasks": "register_tasks",
    "rewards": "register_rewards",
    "advantage_estimators": "register_advantage_estimators",
    "policy_losses": "register_policy_losses",
    "synthesizers": "register_synthesizers",
    "segmenters": "register_segmenters",
    "transports": "register_transports",
    "server_backends": "register_server_backends",
    "rollout_engines": "register_rollout_engines",
    "model_families": "register_model_families",
    "trackers": "register_trackers",
    "describers": "register_describers",
    "tiny_models": "register_tiny_models",
    "dataset_formats": "register_dataset_formats",
    "benchmarks": "register_benchmarks",
}

#: singular form used in error messages and config keys
SINGULAR = {
    "tasks": "task",
    "rewards": "reward",
    "advantage_estimators": "advantage estimator",
    "policy_losses": "policy loss",
    "synthesizers": "synthesizer",
    "segmenters": "segmenter",
    "transports": "transport",
    "server_backends": "server backend",
    "rollout_engines": "rollout engine",
    "model_families": "model family",
    "trackers": "tracker",
    "describers": "describer",
    "tiny_models": "tiny model",
    "dataset_formats": "dataset format",
    "benchmarks": "benchmark",
}


@dataclass(frozen=True)
class Registration:
    """One named thing a plugin added, and who added it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    version: str
    description: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
        }


@dataclass
class Registry:
    """Every registration of every kind, built once from the plugin manager."""

    pm: pluggy.PluginManager
    entries: dict[str, dict[str, Registration]] = field(default_factory=dict)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries.get(kind, {}))

    def get(self, kind: str, name: str) -> Registration:
        if kind not in KINDS:
            raise KeyError(f"unknown plugin kind {kind!r}; kinds are {sorted(KINDS)}")
        found = self.entries.get(kind, {})
        if name in found:
            return found[name]
        installed = ", ".join(sorted(found)) or "none"
        close = difflib.get_close_matches(name, list(found), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownPluginError(
            f"no {SINGULAR[kind]} named {name!r} is installed.{hint} Installed {kind}: {installed}. "
            f"A plugin package provides more (see `syngrpo plugins`); the built-in ones that need a heavy "
            f"dependency name the extra to install (pip install 'syngrpo[EXTRA]') when they are used."
        )

    def create(self, kind: str, name: str, /, **options: Any) -> Any:
        """Build the named thing: ``factory(**options)`` (an option may itself be called ``name`` or ``kind``)."""
        return self.get(kind, name).factory(**options)

    def as_json(self) -> dict[str, list[dict[str, str]]]:
        return {kind: [self.entries[kind][n].as_dict() for n in self.names(kind)] for kind in KINDS}


def _distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    for plug, dist in pm.list_plugin_distinfo():
        if plug is plugin:
            return dist.project_name, dist.version
    return "(registered directly)", ""


def _unique_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """A readable plugin name for error messages: the module's or the class's name."""
    import types

    base = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__qualname__
    name, n = base, 1
    while pm.has_plugin(name):
        n += 1
        name = f"{base}#{n}"
    return name


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name, hook_impls, kwargs):
        print(f"[syngrpo hook] {hook_name} -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        print(f"[syngrpo hook] {hook_name} done", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def make_plugin_manager(extra_plugins: Iterable[object] = (), *, autoload: bool | None = None) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, the entry-point plugins and ``extra_plugins``."""
    pm = pluggy.PluginManager("syngrpo")
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = not os.environ.get("SYNGRPO_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        if pm.is_registered(plugin):
            continue  # an installed package's module that its entry point already loaded: one registration
        pm.register(plugin, name=_unique_name(pm, plugin))
    # A misspelt hook implementation (register_task instead of register_tasks) is an error, not a no-op.
    pm.check_pending()
    if os.environ.get("SYNGRPO_TRACE_HOOKS"):
        _trace(pm)
    return pm


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hook once and collect what the plugins registered."""
    registry = Registry(pm=pm)
    for kind, hook_name in KINDS.items():
        found: dict[str, Registration] = {}
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin = impl.plugin
            plugin_name = impl.plugin_name
            dist, version = _distribution_of(pm, plugin)

            def register(name: str, factory: Callable[..., Any], *, description: str = "",
                         _plugin=plugin_name, _dist=dist, _version=version, _kind=kind,
                         _found=found) -> None:
                if not isinstance(name, str) or not name:
                    raise ValueError(f"plugin {_plugin!r} registered a {SINGULAR[_kind]} with an empty name")
                if name in _found:
                    other = _found[name]
                    raise DuplicateNameError(
                        f"two plugins register a {SINGULAR[_kind]} named {name!r}: "
                        f"{other.plugin!r} ({other.distribution}) and {_plugin!r} ({_dist})"
                    )
                if not description:
                    doc = (getattr(factory, "__doc__", None) or "").strip()
                    description = doc.splitlines()[0] if doc else ""
                _found[name] = Registration(_kind, name, factory, _plugin, _dist, _version, description)

            if os.environ.get("SYNGRPO_TRACE_HOOKS"):
                print(f"[syngrpo hook] {hook_name} -> {plugin_name} ({dist})", file=sys.stderr)
            impl.function(register=register)
        registry.entries[kind] = found
    return registry


def load_local_plugins(specs: Iterable[str]) -> list[object]:
    """The plugin modules a config lists under ``plugins:`` — importable module names or ``.py`` files.

    A file is imported under a private module name (``syngrpo_local_<stem>``) so two
    files with the same stem in different folders do not collide; its directory is
    not added to ``sys.path``.  The modules are registered like entry-point plugins
    (their ``@hookimpl`` functions); errors name the entry and say what to fix.
    """
    import importlib
    from pathlib import Path

    modules: list[object] = []
    for spec in specs:
        spec = str(spec).strip()
        if spec.endswith(".py") or "/" in spec or os.sep in spec:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise ConfigError(f"plugins: {spec!r} is not a file (a module name or a path to a .py file)")
            modules.append(_import_file(path))
            continue
        try:
            modules.append(importlib.import_module(spec))
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import module {spec!r}: {exc}") from exc
    return modules


def _import_file(path: Any) -> Any:
    """Import a ``.py`` file as a module (cached by its absolute path)."""
    import hashlib
    import importlib.util

    resolved = path.resolve()
    name = f"syngrpo_local_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    return module


def load_callable(ref: str) -> Callable[..., Any]:
    """The function ``ref`` names: ``path/to/file.py:function`` or ``package.module:function``."""
    import importlib
    from pathlib import Path

    where, sep, attr = str(ref).rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise ConfigError(f"{ref!r} is not of the form path/to/file.py:function or package.module:function")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ref!r}: no file {where!r} (paths are relative to the working directory)")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ConfigError(f"{ref!r}: cannot import module {where!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"{ref!r}: {where!r} has no function {attr!r}")
    return fn


def is_callable_ref(name: str) -> bool:
    """True for ``file.py:function`` / ``module:function`` references (registered names have no colon)."""
    return ":" in str(name)


def keyword_options(cls: type) -> set[str]:
    """Keyword options of ``cls.__init__``, following ``**options`` up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


_DEFAULT: Registry | None = None


def get_registry(extra_plugins: Iterable[object] = (), *, refresh: bool = False) -> Registry:
    """The process-wide registry (built on first use); ``extra_plugins`` builds a fresh one."""
    global _DEFAULT
    extra = list(extra_plugins)
    if extra:
        return build_registry(make_plugin_manager(extra))
    if _DEFAULT is None or refresh:
        _DEFAULT = build_registry(make_plugin_manager())
    return _DEFAULT
