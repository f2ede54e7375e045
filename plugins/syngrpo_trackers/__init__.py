"""Experiment trackers for syngrpo: Weights & Biases and MLflow (extras ``wandb`` and ``mlflow``)."""
