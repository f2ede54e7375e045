"""The one link between a run and its data server (syngrpo.synthesis.connect), and the rules pre-flight owns.

A transport says itself whether it runs the data server in this process (``factory.in_process``): a
third-party in-process transport is wired like the built-in one, without URLs or token.  The spawned
server's config is one validated object, and pre-flight checks that object.
"""

from __future__ import annotations

import pytest

from syngrpo.config import load_train_config
from syngrpo.errors import ConfigError
from syngrpo.hookspecs import hookimpl
from syngrpo.synthesis.connect import connect, is_in_process, spawned_server_config
from syngrpo.testing import registry_with
from syngrpo.train.preflight import check_config
from syngrpo.train.warm_start import WarmStartRecipe


class LocalTransport:
    """A stand-in in-process transport: records the options it was built with."""

    def __init__(self, **options):
        self.options = options
        self.closed = False

    def close(self):
        self.closed = True


def local_transport(*, queue_size: int = 8):
    return LocalTransport(queue_size=queue_size)


local_transport.in_process = True  # the declaration the core reads


class LocalTransportPlugin:
    @hookimpl
    def register_transports(self, register):
        register("local", local_transport, description="test: a third-party in-process transport")


@pytest.fixture(scope="module")
def local_registry():
    return registry_with(LocalTransportPlugin(), autoload=True)


def _cfg(*sets: str):
    return load_train_config(None, ["data.task=rec", "synthesis.mode=async", *sets])


def test_a_third_party_in_process_transport_needs_no_server_and_gets_no_urls_or_token(local_registry, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("SYNGRPO_SERVER_TOKEN", "a-token-of-the-environment")
    cfg = _cfg("synthesis.transport=local", "synthesis.transport_options={queue_size: 4}")
    assert is_in_process(local_registry, "local") and is_in_process(local_registry, "inprocess")
    assert not is_in_process(local_registry, "aiohttp")
    report = check_config(cfg, local_registry, data=False)
    assert not any("synthesis.servers" in e for e in report.errors), report.errors
    link = connect(cfg.synthesis, local_registry, server_dir=tmp_path / "server")
    assert link.transport.options == {"queue_size": 4} and link.server is None
    link.close()
    assert link.transport.closed


def test_a_transport_that_needs_a_server_gets_the_urls_and_the_checked_token(local_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNGRPO_SERVER_TOKEN", "short")  # both callers check it by the server's own rule now
    cfg = _cfg("synthesis.servers=[http://127.0.0.1:9]")
    with pytest.raises(ConfigError, match="SYNGRPO_SERVER_TOKEN"):
        connect(cfg.synthesis, local_registry, server_dir=tmp_path)
    no_server = _cfg()
    with pytest.raises(ConfigError, match=r"synthesis\.servers"):
        connect(no_server.synthesis, local_registry, server_dir=tmp_path)
    assert any("synthesis.servers" in e for e in check_config(no_server, local_registry, data=False).errors)


def test_the_spawned_servers_config_is_one_validated_object_on_loopback(tmp_path):
    file = tmp_path / "server.yaml"
    file.write_text("synthesizer: procedural\nworkers: 2\nhost: 0.0.0.0\nsynthesizer_options: {distractors: 3}\n")
    cfg = _cfg("synthesis.spawn_server=true", f"synthesis.server_config={file}",
               "synthesis.server={workers: 1, synthesizer_options: {}}")
    server = spawned_server_config(cfg.synthesis, tmp_path / "store")
    assert (server.workers, server.synthesizer_options, server.synthesizer) == (["cpu"], {}, "procedural")
    assert (server.host, server.port, str(server.data_dir)) == ("127.0.0.1", 0, str(tmp_path / "store"))
    bad = _cfg("synthesis.spawn_server=true", "synthesis.server={workerz: 1}")
    with pytest.raises(ConfigError, match="workerz"):
        spawned_server_config(bad.synthesis)
    assert any("workerz" in e for e in check_config(bad, data=False).errors)


def test_fsdp_with_fp16_is_a_check_error_before_any_process_group_and_lora_is_not(tmp_path):
    cfg = load_train_config(None, ["synthesis.mode=off", "parallel.strategy=fsdp", "model.dtype=float16"])
    assert any("fsdp" in e and "float16" in e for e in check_config(cfg, data=False).errors)
    for sets in (["model.dtype=bfloat16"], ["model.dtype=bfloat16", "model.lora.enabled=true"]):
        fine = load_train_config(None, ["synthesis.mode=off", "parallel.strategy=fsdp", *sets])
        assert not any("fsdp" in e for e in check_config(fine, data=False).errors), sets


def test_the_trainer_and_the_study_read_one_warm_start_recipe():
    from syngrpo.experiments.study import StudyConfig

    train = load_train_config(None, ["synthesis.mode=off", "sft.steps=7", "sft.plain_steps=3",
                                     "sft.vision_pretrain.steps=5", "sft.vision_pretrain.object_labels=true"])
    study = StudyConfig.model_validate({"sft": {"steps": 7, "plain_steps": 3, "lr": train.sft.lr,
                                                "batch_size": train.sft.batch_size},
                                        "vision_pretrain": {"steps": 5, "object_labels": True}})
    assert WarmStartRecipe.of(train.sft, train.sft.vision_pretrain) == WarmStartRecipe.of(study.sft,
                                                                                          study.vision_pretrain)
