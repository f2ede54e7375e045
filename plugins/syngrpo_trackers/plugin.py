"""Entry-point module of the ``wandb`` and ``mlflow`` trackers; imports neither library."""

from __future__ import annotations

from syngrpo.hookspecs import hookimpl


def wandb_tracker(**options):
    """Weights & Biases: scalars, config, eval tables, completions, gallery (extra: wandb)."""
    from syngrpo_trackers.wandb_tracker import WandbTracker

    return WandbTracker(**options)


def mlflow_tracker(**options):
    """MLflow: metrics, params, config, tables and gallery as artifacts (extra: mlflow)."""
    from syngrpo_trackers.mlflow_tracker import MLflowTracker

    return MLflowTracker(**options)


@hookimpl
def register_trackers(register):
    register("wandb", wandb_tracker)
    register("mlflow", mlflow_tracker)
