"""W&B (offline) and MLflow (file store) get what metrics.jsonl gets: the real libraries, read back."""

from __future__ import annotations

import math

import pytest

from syngrpo.errors import MissingExtraError
from syngrpo.rundir.runlog import read_jsonl
from syngrpo.rundir.trackers import TrackerSet
from syngrpo.train.trainer import Trainer

wandb = pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")

KEYS = ("reward/total", "reward/format", "loss", "entropy", "diversity/v_mean")


@pytest.fixture(scope="module")
def tracked_run(sft_policy_dir, tmp_path_factory, config_for):
    """Three sync Syn-GRPO steps (in-process data server), eval at the end, every tracker on."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(root),
                           "WANDB_CACHE_DIR": str(root / "wandb-cache"), "WANDB_CONFIG_DIR": str(root / "wandb-cfg"),
                           "WANDB_DISABLE_GIT": "true"}.items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        cfg = config_for(sft_policy_dir, "synthesis.transport=inprocess", "optim.max_steps=3", "eval.at_end=true",
                         "data.toy.n_eval=2", "rollout.max_new_tokens=80", "logging.gallery=true",
                         "logging.trackers=[tensorboard, wandb, mlflow]",
                         "logging.tracker_options={wandb: {project: syngrpo-test}, mlflow: {experiment: t}}",
                         mode="sync")
        run_dir = root / "run"
        with Trainer(cfg, run_dir) as trainer:
            trainer.train()
    return run_dir


def _wandb_records(path):
    """The protobuf records of a .wandb file (W&B's LevelDB-style log: 32 KiB blocks of framed chunks).

    Read here with the format's framing rules because the SDK no longer ships a Python reader; the
    records themselves are parsed with the SDK's own protobuf classes.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block, records, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # FULL
            records.append(chunk)
        elif kind == 2:  # FIRST
            partial = chunk
        elif kind == 3:  # MIDDLE
            partial += chunk
        elif kind == 4:  # LAST
            records.append(partial + chunk)
    return records


def _wandb_history(run_dir):
    """Every ``history`` record of the offline run's .wandb file, as {key: value} with ``_step``."""
    import json
    import time

    from wandb.proto import wandb_internal_pb2

    (path,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    # wandb-core (a separate process) may still be writing the log's tail when run.finish() has returned:
    # read once the run's "exit" record is there (seconds at most)
    deadline = time.monotonic() + 60
    while True:
        records = _wandb_records(path)
        kinds = set()
        for data in records:
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(data)
            except Exception:  # a chunk still being written
                continue
            kinds.add(record.WhichOneof("record_type"))
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rows = []
    for data in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_wandb_offline_run_holds_the_metrics_of_metrics_jsonl(tracked_run):
    steps = {r["step"]: r for r in read_jsonl(tracked_run / "metrics.jsonl")}
    history = _wandb_history(tracked_run)
    logged = {}
    for row in history:
        logged.setdefault(row["_step"], {}).update(row)
    assert sorted(logged) == sorted(steps)
    for step, record in steps.items():
        for key in KEYS:
            if isinstance(record.get(key), float) and math.isfinite(record[key]):
                assert logged[step][key] == pytest.approx(record[key], rel=1e-6), (step, key)
    # tables are logged as table files (their nested keys: "eval/_type" ...), the gallery as images
    assert any(row.get("eval/_type") == "table-file" for row in history)
    assert any(row.get("samples/_type") == "table-file" for row in history)
    assert any(k.startswith("gallery/") for row in history for k in row)
    assert (tracked_run / "wandb_run_id").is_file()


def test_mlflow_run_holds_the_metrics_config_and_tables(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tracked_run / "mlruns").resolve().as_uri())  # the tracker's default store
    run = client.get_run((tracked_run / "mlflow_run_id").read_text().strip())
    records = [r for r in read_jsonl(tracked_run / "metrics.jsonl") if "reward/total" in r]
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "reward/total")}
    assert history == pytest.approx({r["step"]: r["reward/total"] for r in records})
    assert run.data.params["optim.max_steps"] == "3" and run.data.params["synthesis.mode"] == "sync"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "tables"} <= artifacts
    assert run.info.status == "FINISHED"


def test_a_tracker_that_fails_is_switched_off_and_training_goes_on(caplog):
    calls = []

    class Flaky:
        def start(self, **kw): calls.append("start")
        def log_metrics(self, step, metrics): raise ConnectionError("service down")
        def log_table(self, *a): calls.append("table")
        def log_images(self, *a): calls.append("images")
        def close(self): calls.append("close")

    trackers = TrackerSet({"flaky": Flaky()})
    trackers.start(run_dir=".", run_name="r", config={}, start_step=0)
    trackers.log_metrics(1, {"x": 1.0})
    trackers.log_table("eval", ["metric"], [["x"]], 1)
    trackers.close()
    assert calls == ["start"] and not trackers
    assert "is off for the rest of this run" in caplog.text


def test_a_tracker_whose_library_is_missing_names_the_extra(monkeypatch, registry):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError, match=r"syngrpo\[wandb\]"):
        registry.create("trackers", "wandb")
