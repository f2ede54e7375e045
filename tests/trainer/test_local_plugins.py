"""Rewards and plugins given as files: what TRL/verl users pass as ``path/to/file.py:function``."""

from __future__ import annotations

import json
import textwrap

import pytest

from syngrpo.errors import ConfigError
from syngrpo.perception.rewards import make_reward
from syngrpo.plugins import get_registry, load_callable, load_local_plugins
from syngrpo.train.trainer import Trainer

REWARD_FILE = '''
def brevity(responses, samples, *, task, frames=None, scale=1.0):
    """Shorter completions score higher (a reward a user writes in five minutes)."""
    return [scale / (1.0 + len(r.text)) for r in responses]


def wrong_signature(responses):
    return [0.0] * len(responses)


def wrong_length(responses, samples, *, task, frames=None):
    return [0.0]
'''

PLUGIN_FILE = '''
from syngrpo.hookspecs import hookimpl


class Half:
    def __call__(self, responses, samples, *, task, frames=None):
        return [0.5] * len(responses)


@hookimpl
def register_rewards(register):
    register("half", lambda **options: Half(), description="a constant 0.5 (local plugin file)")
'''


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(textwrap.dedent(REWARD_FILE), encoding="utf-8")
    return path


def _run_one_step(cfg, run_dir):
    with Trainer(cfg, run_dir) as trainer:
        trainer.setup()
        return trainer.train_step(1)


def test_a_reward_given_as_file_and_function_trains_and_logs_under_its_name(reward_file, tiny_policy_dir,
                                                                           tmp_path, config_for):
    cfg = config_for(tiny_policy_dir, f"rewards.terms=[{{name: format}}, {{name: '{reward_file}:brevity', "
                                      "weight: 2.0, options: {scale: 3.0}}]")
    metrics = _run_one_step(cfg, tmp_path / "run")
    assert 0 < metrics["reward/brevity"] <= 2.0 * 3.0  # weight x scale / (1 + length)
    assert metrics["reward/total"] == pytest.approx(metrics["reward/brevity"] + metrics["reward/format"])


def test_a_reward_file_with_the_wrong_signature_is_a_config_error_naming_it(reward_file):
    with pytest.raises(ConfigError, match="wrong_signature.*cannot take the reward call"):
        make_reward(get_registry(), f"{reward_file}:wrong_signature", {})
    with pytest.raises(ConfigError, match="cannot take the reward call"):  # an option it does not accept
        make_reward(get_registry(), f"{reward_file}:brevity", {"temperature": 2})


def test_a_reward_that_returns_the_wrong_number_of_values_fails_loudly(reward_file):
    reward = make_reward(get_registry(), f"{reward_file}:wrong_length", {})
    with pytest.raises(ValueError, match="returned 1 values for 2 responses"):
        reward([object(), object()], [object(), object()], task=None)


@pytest.mark.parametrize("ref, message", [
    ("no_colon_here", "is not of the form"),
    ("missing_file.py:fn", "no file 'missing_file.py'"),
    ("json:not_there", "has no function 'not_there'"),
    ("no_such_module_xyz:fn", "cannot import module"),
])
def test_bad_references_say_what_is_wrong(ref, message):
    with pytest.raises(ConfigError, match=message):
        load_callable(ref)


def test_a_module_reference_works_like_a_file(reward_file):
    assert load_callable("json:dumps") is json.dumps


def test_the_trainer_plugins_key_registers_a_local_plugin_file(tmp_path, tiny_policy_dir, config_for):
    plugin = tmp_path / "local_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN_FILE), encoding="utf-8")
    cfg = config_for(tiny_policy_dir, f"plugins=['{plugin}']", "rewards.terms=[{name: half}, {name: format}]")
    metrics = _run_one_step(cfg, tmp_path / "run")
    assert metrics["reward/half"] == 0.5


def test_a_missing_plugin_file_or_module_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        load_local_plugins([str(tmp_path / "absent.py")])
    with pytest.raises(ConfigError, match="cannot import module 'no_such_plugin_module'"):
        load_local_plugins(["no_such_plugin_module"])


def test_two_terms_whose_functions_share_a_name_are_refused(reward_file, tiny_policy_dir, config_for):
    with pytest.raises(ConfigError, match="listed twice"):
        config_for(tiny_policy_dir, f"rewards.terms=[{{name: '{reward_file}:brevity'}}, "
                                    f"{{name: 'other/{reward_file.name}:brevity'}}]")


def test_syngrpo_check_imports_a_file_reward_and_reports_a_bad_one(reward_file, tiny_policy_dir, config_for):
    from syngrpo.train.preflight import check_config

    good = config_for(tiny_policy_dir, f"rewards.terms=[{{name: format}}, {{name: '{reward_file}:brevity'}}]")
    assert check_config(good, data=False).errors == []
    bad = config_for(tiny_policy_dir, f"rewards.terms=[{{name: '{reward_file}:wrong_signature'}}]")
    (error,) = check_config(bad, data=False).errors
    assert "wrong_signature" in error and "cannot take the reward call" in error


def test_the_data_servers_plugins_key_takes_a_py_file_too(tmp_path):
    """One loader for both ``plugins:`` keys: the server's accepts what the trainer's does."""
    from syngrpo.synthesis.server.calls import load_plugin_modules

    plugin = tmp_path / "server_side_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN_FILE), encoding="utf-8")
    assert "half" in get_registry(load_plugin_modules([str(plugin)])).names("rewards")
