"""Old module paths of syngrpo 0.1, kept importable for one release (deprecated).

syngrpo 0.2 moved its modules into packages by concern (docs/architecture.md). A plugin written
against a documented 0.1 path (``from syngrpo.task import Task``) keeps working: importing an old
path returns the module that now lives at the new one (the *same* module object, so ``isinstance``
and registries see one class) and warns once with the new path. New code imports from
:mod:`syngrpo.api` (what a plugin author needs) or from the new paths.

The aliasing is one :class:`importlib.abc.MetaPathFinder` installed by ``syngrpo/__init__.py``;
the table below is the whole list. The aliases stay through the 0.2 releases and go in 0.3
(docs/extending.md, "Import paths").
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import Any

#: old module path -> new module path
MOVED: dict[str, str] = {
    "syngrpo.answers": "syngrpo.perception.answers",
    "syngrpo.check": "syngrpo.train.preflight",
    "syngrpo.checkpoint": "syngrpo.rundir.checkpoint",
    "syngrpo.coco_group": "syngrpo.perception.coco_group",
    "syngrpo.configio": "syngrpo.config.io",
    "syngrpo.datafiles": "syngrpo.data.files",
    "syngrpo.describers": "syngrpo.synthesis.describers",
    "syngrpo.detection": "syngrpo.perception.detection",
    "syngrpo.diversity": "syngrpo.algo.diversity",
    "syngrpo.evaluate": "syngrpo.train.evaluate",
    "syngrpo.geometry": "syngrpo.perception.geometry",
    "syngrpo.grpo": "syngrpo.algo.grpo",
    "syngrpo.hfdata": "syngrpo.data.hf",
    "syngrpo.losses": "syngrpo.algo.losses",
    "syngrpo.models.tiny_sam": "syngrpo_sam.tiny",  # into the plugin that loads it (a string: no core import)
    "syngrpo.models.tiny_sdxl": "syngrpo_sdxl.tiny",
    "syngrpo.models.vision_pretrain": "syngrpo.train.vision_pretrain",
    "syngrpo.offline": "syngrpo.train.offline",
    "syngrpo.parallel": "syngrpo.scale.parallel",
    "syngrpo.plan": "syngrpo.scale.plan",
    "syngrpo.pool": "syngrpo.data.pool",
    "syngrpo.precision": "syngrpo.scale.precision",
    "syngrpo.response": "syngrpo.perception.response",
    "syngrpo.rewards": "syngrpo.perception.rewards",
    "syngrpo.rollout": "syngrpo.models.rollout",
    "syngrpo.runlog": "syngrpo.rundir.runlog",
    "syngrpo.scaffold": "syngrpo.authoring.scaffold",
    "syngrpo.scoring": "syngrpo.models.scoring",
    "syngrpo.server": "syngrpo.synthesis.server",
    "syngrpo.server.__main__": "syngrpo.synthesis.server.__main__",
    "syngrpo.server.app": "syngrpo.synthesis.server.app",
    "syngrpo.server.calls": "syngrpo.synthesis.server.calls",
    "syngrpo.server.clientside": "syngrpo.synthesis.server.clientside",
    "syngrpo.server.config": "syngrpo.synthesis.server.config",
    "syngrpo.server.inprocess": "syngrpo.synthesis.server.inprocess",
    "syngrpo.server.runner": "syngrpo.synthesis.server.runner",
    "syngrpo.server.spawn": "syngrpo.synthesis.server.spawn",
    "syngrpo.server.store": "syngrpo.synthesis.server.store",
    "syngrpo.server.validation": "syngrpo.synthesis.server.validation",
    "syngrpo.server.workers": "syngrpo.synthesis.server.workers",
    "syngrpo.sft": "syngrpo.train.sft",
    "syngrpo.study": "syngrpo.experiments.study",
    "syngrpo.summary": "syngrpo.rundir.summary",
    "syngrpo.synthesis_client": "syngrpo.synthesis.client",
    "syngrpo.task": "syngrpo.perception.task",
    "syngrpo.toyshapes": "syngrpo.perception.toyshapes",
    "syngrpo.trackers": "syngrpo.rundir.trackers",
    "syngrpo.trainer": "syngrpo.train.trainer",
    "syngrpo.transport": "syngrpo.synthesis.transport",
    "syngrpo.vlmr1": "syngrpo.perception.vlmr1",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec: Any) -> Any:
        warnings.warn(f"{self.old} moved to {self.new} in syngrpo 0.2; the old path goes away in a later release "
                      f"(plugin authors: import from syngrpo.api)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: Any) -> None:  # the new module is already executed
        sys.modules[self.old] = module


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname, new))


def install() -> None:
    """Put the finder first on ``sys.meta_path``: an old path under an aliased package (``syngrpo.server.app``)
    must resolve to the module already loaded, not be found again as a second copy through the package's path."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
