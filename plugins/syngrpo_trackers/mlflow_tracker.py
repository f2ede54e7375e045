"""MLflow tracker: metrics with their steps, the config as params and an artifact, tables and the gallery.

It talks to MLflow through ``MlflowClient`` with an explicit run id (no global
active run), so it does not clash with user code that uses ``mlflow.start_run``.
The run id is kept in ``<run dir>/mlflow_run_id``, so ``--resume`` continues the
same MLflow run.  The tracking URI defaults to ``MLFLOW_TRACKING_URI``, else a
file store in ``<run dir>/mlruns`` (MLflow 3 keeps its file store in maintenance
mode behind ``MLFLOW_ALLOW_FILE_STORE``, which this default sets; point
``tracking_uri`` at a tracking server or a database for shared use).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from syngrpo.errors import require

ID_FILE = "mlflow_run_id"
#: MLflow refuses longer parameter values
MAX_PARAM_CHARS = 6000


class MLflowTracker:
    """Options: ``tracking_uri``, ``experiment`` (default ``syngrpo``), ``run_name`` (default: the run
    directory's name), ``tags`` (a mapping)."""

    def __init__(self, *, tracking_uri: str | None = None, experiment: str = "syngrpo", run_name: str | None = None,
                 tags: Mapping[str, str] | None = None) -> None:
        require("mlflow", extra="mlflow", what="the mlflow tracker (logging.trackers: [mlflow])")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, *, run_dir: Path, run_name: str, config: Mapping[str, Any], start_step: int) -> None:
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # the run directory's own file store: everything of the run in one folder
            uri = (Path(run_dir) / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        id_file = Path(run_dir) / ID_FILE
        if id_file.is_file():  # a resumed run continues its MLflow run
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(experiment_id, run_name=self.run_name or run_name, tags=self.tags)
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id)
        for key, value in _flatten(config).items():
            self.client.log_param(self.run_id, key, str(value)[:MAX_PARAM_CHARS])
        self.client.log_dict(self.run_id, dict(config), "config.json")

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key=metric_name(k), value=float(v), timestamp=now, step=int(step)) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        self.client.log_dict(self.run_id, {"columns": list(columns), "data": [list(r) for r in rows]},
                             f"tables/{name}/step-{step:06d}.json")

    def log_images(self, name: str, images: Sequence[tuple[str, str]], step: int) -> None:
        where = f"images/{name}/step-{step:06d}"
        for path, _caption in images:
            self.client.log_artifact(self.run_id, str(path), artifact_path=where)
        self.client.log_text(self.run_id, json.dumps([{"file": Path(p).name, "caption": c} for p, c in images],
                                                     indent=1), f"{where}/captions.json")

    def close(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id)
        self.client = None


def metric_name(key: str) -> str:
    """MLflow's spelling of a metric key: characters it refuses (``@`` of ``eval/acc@0.5``) become ``_``."""
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in key)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept whole, as their JSON text)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(value) if isinstance(value, (list, tuple)) else value}
