"""A run's secrets never reach its directory or its trackers in clear, and a resumed run gets them back.

The token guards a real spawned data server (the run's jobs only come back if it was sent), W&B runs
offline and MLflow writes to its recommended local store (sqlite): every byte those libraries wrote is
read back and searched for the token.
"""

from __future__ import annotations

import secrets

import pytest
import yaml

from syngrpo.config import TrainConfig, load_train_config
from syngrpo.config.io import REDACTED, drop_redacted, load_config, redact_secrets
from syngrpo.errors import ConfigError
from syngrpo.rundir.runlog import read_jsonl
from syngrpo.train.trainer import Trainer

pytest.importorskip("wandb")
pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")

TOKEN = "tok-" + secrets.token_hex(16)
API_KEY = "sk-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def secret_run(sft_policy_dir, tmp_path_factory, config_for):
    """Two sync steps against a spawned data server that requires ``TOKEN``, with W&B (offline) and MLflow
    (sqlite) on; the W&B options carry an API key as a plugin option would."""
    root = tmp_path_factory.mktemp("secrets")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow's sqlite store puts its artifacts under ./mlruns
        for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(root),
                           "WANDB_CACHE_DIR": str(root / "wandb-cache"), "WANDB_CONFIG_DIR": str(root / "wandb-cfg"),
                           "WANDB_DISABLE_GIT": "true"}.items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("SYNGRPO_SERVER_TOKEN", raising=False)
        cfg = config_for(sft_policy_dir, "synthesis.spawn_server=true", f"synthesis.token={TOKEN}",
                         "optim.max_steps=2", "rollout.max_new_tokens=80", "optim.batch_size=4",
                         "logging.trackers=[tensorboard, wandb, mlflow]",
                         "logging.tracker_options={wandb: {project: p, tags: [t]}, "
                         f"mlflow: {{tracking_uri: 'sqlite:///{root}/mlflow.db', experiment: e}}}}",
                         mode="sync")
        run = root / "run"
        with Trainer(cfg, run) as trainer:
            trainer.train()
    return root, run


def test_the_token_is_nowhere_in_the_run_directory_nor_the_trackers_files(secret_run):
    root, run = secret_run
    assert read_jsonl(run / "metrics.jsonl")[-1]["synthesis/done_total"] > 0, "the server took the token"
    assert yaml.safe_load((run / "config.yaml").read_text())["synthesis"]["token"] == REDACTED
    assert list(root.glob("mlflow.db")) and list(run.glob("wandb/offline-run-*"))
    leaks = [str(p) for p in root.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not leaks, f"the token is written in clear in {leaks}"


def test_a_resumed_run_reads_the_token_from_a_file_or_the_environment_not_from_config_yaml(secret_run, tmp_path,
                                                                                          monkeypatch):
    _, run = secret_run
    monkeypatch.delenv("SYNGRPO_SERVER_TOKEN", raising=False)
    again = load_train_config(run / "config.yaml", [])
    assert again.synthesis.token is None and again.synthesis.configured_token() is None
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    again = load_train_config(run / "config.yaml", [f"synthesis.token_file={secret}"])
    assert again.synthesis.configured_token() == TOKEN
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="token_file.*empty"):
        load_train_config(run / "config.yaml", [f"synthesis.token_file={tmp_path / 'empty'}"]).synthesis \
            .configured_token()
    with pytest.raises(ConfigError, match="not both"):
        load_train_config(run / "config.yaml", [f"synthesis.token_file={secret}", f"synthesis.token={TOKEN}"])


def test_secrets_in_free_form_options_and_urls_are_redacted_and_other_keys_are_not():
    data = {"synthesis": {"token": TOKEN, "token_file": "/home/me/.token", "servers": ["http://u:pw123@h:1/"]},
            "rollout": {"max_new_tokens": 80},
            "offline": {"describer_options": {"api_key": API_KEY, "model": "gpt"}},
            "logging": {"tracker_options": {"wandb": {"WANDB_API_KEY": API_KEY},
                                            "mlflow": {"tracking_uri": "postgresql://me:pw456@db/mlflow"}}}}
    out = redact_secrets(data)
    text = repr(out)
    assert TOKEN not in text and API_KEY not in text and "pw123" not in text and "pw456" not in text
    assert out["synthesis"]["token_file"] == "/home/me/.token" and out["rollout"]["max_new_tokens"] == 80
    assert out["offline"]["describer_options"]["model"] == "gpt"
    assert data["synthesis"]["token"] == TOKEN, "the config itself is left as it was"
    kept, dropped = drop_redacted({"synthesis": out["synthesis"] | {"servers": []}, "offline": out["offline"]})
    assert dropped == ["synthesis.token", "offline.describer_options.api_key"] and "token" not in kept["synthesis"]
    with pytest.raises(ConfigError, match="logging.tracker_options.mlflow.tracking_uri.*--set"):
        drop_redacted({"logging": out["logging"]})


def test_a_config_yaml_with_a_redacted_token_loads_and_set_gives_it_back(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"synthesis:\n  token: '{REDACTED}'\n  mode: sync\n")
    assert load_config(TrainConfig, path).synthesis.token is None
    assert load_config(TrainConfig, path, [f"synthesis.token={TOKEN}"]).synthesis.token == TOKEN
