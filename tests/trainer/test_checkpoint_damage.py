"""``--resume`` checks a checkpoint whole before it trusts it, on checkpoints a real tiny run wrote.

Every kind of damage the outside probe of issue #24 found (bit rot inside the optimizer state, a deleted
weights file, a deleted ``config.json``, garbage in ``latest``, weights that went NaN before the save, a
run killed while writing its first checkpoint) must end in one of two ways: the run resumes from the
newest checkpoint that is whole, with a warning naming what was wrong, or it stops at once with an
error that says what to do.  Never a crash later in the run.
"""

from __future__ import annotations

import logging
import pickle
import shutil

import pytest
import torch

from syngrpo.errors import ConfigError
from syngrpo.rundir.checkpoint import checkpoint_problem, latest_checkpoint
from syngrpo.train.trainer import Trainer

STEPS = ("sft.enabled=false", "eval.at_start=false", "logging.save_every=1")


@pytest.fixture(scope="module")
def tiny_run(tiny_policy_dir, tmp_path_factory, config_for, registry):
    """A real two-step run with a checkpoint after each step (the tiny random policy, no synthesis)."""
    run = tmp_path_factory.mktemp("damage") / "run"
    cfg = config_for(tiny_policy_dir, *STEPS, "optim.max_steps=2")
    with Trainer(cfg, run, registry=registry) as t:
        t.train()
    assert [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == ["step-000001", "step-000002"]
    return run


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the tiny run to damage."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def _resume(run, config_for, tiny_policy_dir, registry, steps=3):
    cfg = config_for(tiny_policy_dir, *STEPS, f"optim.max_steps={steps}")
    return Trainer(cfg, run, resume=run, registry=registry)


def _state_file(ckpt):
    """The optimizer / scheduler / RNG state file (whatever the version that wrote it called it)."""
    found = [p for p in (ckpt / "optimizer.safetensors", ckpt / "optimizer.pt") if p.is_file()]
    assert found, f"no optimizer state in {ckpt}"
    return found[0]


def _flip_middle(path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0x5A for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))


DAMAGES = {
    "bit rot inside the optimizer state": lambda c: _flip_middle(_state_file(c)),
    "bit rot inside the weights": lambda c: _flip_middle(c / "model" / "model.safetensors"),
    "model.safetensors deleted": lambda c: (c / "model" / "model.safetensors").unlink(),
    "config.json deleted": lambda c: (c / "model" / "config.json").unlink(),
    "trainer_state.json deleted": lambda c: (c / "trainer_state.json").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_falls_back_past_damage_other_than_truncation_and_names_it(run, damage, caplog, config_for,
                                                                          tiny_policy_dir, registry):
    newest = run / "checkpoints" / "step-000002"
    DAMAGES[damage](newest)
    with caplog.at_level(logging.WARNING), _resume(run, config_for, tiny_policy_dir, registry) as t:
        t.setup()
        assert t.step == 1, f"{damage}: resumed from step {t.step}"
    assert "step-000002" in caplog.text and "damaged" in caplog.text
    assert "step-000002" in (run / "train.log").read_text(), "the fallback is said in train.log too"


def test_garbage_in_latest_is_ignored_with_a_warning(run, caplog, config_for, tiny_policy_dir, registry):
    (run / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x00 not a name \x80\x81")
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(run) == run / "checkpoints" / "step-000002"
    assert "latest" in caplog.text
    with _resume(run, config_for, tiny_policy_dir, registry) as t:
        t.setup()
        assert t.step == 2


def test_weights_that_went_nan_before_the_save_are_never_resumed(tiny_policy_dir, tmp_path, config_for, registry,
                                                                 caplog):
    run = tmp_path / "run"
    cfg = config_for(tiny_policy_dir, *STEPS, "optim.max_steps=3")
    with Trainer(cfg, run, registry=registry) as t:
        t.train(until=2)
        next(t.bundle.model.parameters()).data[0] = float("nan")  # the run diverged after step 2's save
        t.step = 3
        t.save()
    assert latest_checkpoint(run) != run / "checkpoints" / "step-000003"
    why = checkpoint_problem(run / "checkpoints" / "step-000003")
    assert why is not None and "NaN" in why
    with caplog.at_level(logging.WARNING), Trainer(config_for(tiny_policy_dir, *STEPS, "optim.max_steps=4"), run,
                                                   resume=run, registry=registry) as t:
        t.setup()
        assert t.step == 2
        t.train()  # and it runs to the end instead of crashing on NaN probabilities
        assert t.step == 4


def test_a_run_killed_during_its_first_checkpoint_says_there_is_nothing_to_resume_and_what_to_do(run, config_for,
                                                                                                tiny_policy_dir,
                                                                                                registry):
    root = run / "checkpoints"
    shutil.rmtree(root / "step-000002")
    (root / "step-000001").rename(root / "step-000001.tmp")  # the first save never finished
    (root / "latest").unlink()
    with pytest.raises(ConfigError) as err:
        _resume(run, config_for, tiny_policy_dir, registry).setup()
    text = str(err.value)
    assert "step-000001.tmp" in text and "without --resume" in text


def test_a_checkpoint_holds_no_pickle_and_a_planted_one_is_never_run(run, tmp_path):
    ckpt = run / "checkpoints" / "step-000002"
    for path in ckpt.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert path.suffix not in {".pt", ".bin", ".pkl", ".pth"}, path
            assert head[:1] != b"\x80" and head != b"PK", f"{path} is a pickle or a torch.save archive"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (ckpt / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))  # a planted weights file
    why = checkpoint_problem(ckpt)
    assert why is not None and "pytorch_model.bin" in why
    assert latest_checkpoint(run) == run / "checkpoints" / "step-000001"
    legacy = run / "checkpoints" / "step-000001" / "optimizer.pt"  # an old-format state file, crafted
    torch.save({"x": 1}, legacy)
    legacy.write_bytes(pickle.dumps(Payload()))
    assert checkpoint_problem(legacy.parent) is not None
    assert not (tmp_path / "pwned").exists()
