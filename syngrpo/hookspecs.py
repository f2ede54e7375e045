"""Everything a plugin can extend, one hook per kind of thing.

Each hook is called once when the plugin manager loads, with a ``register``
callback.  A plugin calls ``register(name, factory, description=...)`` for every
thing it adds; the config then picks one by name (``synthesizer: procedural``).
Factories are called lazily, only for the names a run uses, so a plugin whose
heavy dependency is missing still lists its names and fails with the extra to
install only when someone asks for it.

``register(name, factory, *, description="")`` raises
:class:`syngrpo.errors.DuplicateNameError` when two plugins register the same
name for the same kind; the message names both providers.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("syngrpo")
hookimpl = pluggy.HookimplMarker("syngrpo")


@hookspec
def register_tasks(register):
    """Register perception tasks: ``factory(**options) -> syngrpo.perception.task.Task``."""


@hookspec
def register_rewards(register):
    """Register reward functions: ``factory(**options) -> syngrpo.perception.rewards.RewardFunction``."""


@hookspec
def register_advantage_estimators(register):
    """Register group advantage estimators: ``factory(**options) -> AdvantageEstimator``."""


@hookspec
def register_policy_losses(register):
    """Register policy-loss variants: ``factory(**options) -> PolicyLoss``."""


@hookspec
def register_synthesizers(register):
    """Register image synthesizers (outpainters): ``factory(**options) -> Synthesizer``."""


@hookspec
def register_segmenters(register):
    """Register foreground segmenters: ``factory(**options) -> Segmenter``."""


@hookspec
def register_transports(register):
    """Register trainer-to-data-server transports: ``factory(**options) -> Transport``."""


@hookspec
def register_server_backends(register):
    """Register data-server backends (who runs the workers): ``factory(config, *, ready_file, parent_pid) -> None``."""


@hookspec
def register_rollout_engines(register):
    """Register rollout engines (sampling G responses): ``factory(**options) -> RolloutEngine``."""


@hookspec
def register_model_families(register):
    """Register VLM families: ``factory() -> syngrpo.models.family.ModelFamily`` (loading, prompt, box frame)."""


@hookspec
def register_trackers(register):
    """Register experiment trackers (W&B, MLflow ...): ``factory(**options) -> syngrpo.rundir.trackers.Tracker``."""


@hookspec
def register_describers(register):
    """Register describers (image descriptions written before training): ``factory(**options) -> Describer``."""


@hookspec
def register_tiny_models(register):
    """Register tiny random models for tests and ``syngrpo make-tiny``: ``factory(out_dir, *, seed) -> directory``."""


@hookspec
def register_dataset_formats(register):
    """Register dataset readers: ``factory(**options) -> syngrpo.data.formats.DatasetFormat`` (a layout -> task records)."""


@hookspec
def register_benchmarks(register):
    """Register published evaluation protocols: ``factory() -> syngrpo.perception.benchmark.Benchmark``."""
