"""``--resume`` with a damaged newest checkpoint falls back to the newest intact one and names the broken file.

Both layouts: the gathered one (``model/`` safetensors + ``optimizer.safetensors``) and the sharded one
(``sharded/``: DCP's ``.metadata`` + one ``.distcp`` file per rank), written here by the same
functions a run uses (a single process writes one shard file).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from syngrpo.errors import ConfigError
from syngrpo.rundir.checkpoint import checkpoint_problem, latest_checkpoint, prepare_checkpoint, save_checkpoint
from syngrpo.rundir.sharded_checkpoint import SHARDED_DIR, consolidated_model_state, save_sharded


class TinyConfig:
    def save_pretrained(self, path):
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text('{"model_type": "tiny"}')


class TinyModel(torch.nn.Module):
    """A real module whose ``save_pretrained`` writes real safetensors weights (what a checkpoint holds)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)
        self.config = TinyConfig()

    def save_pretrained(self, path, safe_serialization=True):
        from pathlib import Path

        from safetensors.torch import save_file

        Path(path).mkdir(parents=True, exist_ok=True)
        save_file(dict(self.state_dict()), str(Path(path) / "model.safetensors"))
        (Path(path) / "config.json").write_text('{"model_type": "tiny"}')


def _run(tmp_path, steps=(1, 2, 3)):
    model = TinyModel()
    opt = torch.optim.AdamW(model.parameters())
    for step in steps:
        save_checkpoint(tmp_path, step, model=model, processor=None, optimizer=opt, scheduler=None,
                        state={"pool": {}})
    return tmp_path / "checkpoints"


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("broken", ["model/model.safetensors", "optimizer.safetensors", "trainer_state.json"])
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_names_the_broken_file(tmp_path, caplog, broken):
    root = _run(tmp_path)
    assert latest_checkpoint(tmp_path) == root / "step-000003"
    _truncate(root / "step-000003" / broken)
    with caplog.at_level(logging.WARNING, logger="syngrpo.rundir.checkpoint"):
        found = latest_checkpoint(tmp_path)
    assert found == root / "step-000002"
    assert str(root / "step-000003" / broken) in caplog.text
    assert checkpoint_problem(root / "step-000002") is None


def test_a_damaged_checkpoint_named_directly_or_all_damaged_is_a_clear_error(tmp_path):
    root = _run(tmp_path, steps=(1, 2))
    _truncate(root / "step-000002" / "optimizer.safetensors")
    with pytest.raises(ConfigError, match=r"step-000002/optimizer.safetensors"):
        latest_checkpoint(root / "step-000002")
    _truncate(root / "step-000001" / "model" / "model.safetensors")
    with pytest.raises(ConfigError, match="every checkpoint .* is damaged"):
        latest_checkpoint(tmp_path)


def _run_sharded(tmp_path, steps=(1, 2, 3)):
    model = TinyModel()
    opt = torch.optim.AdamW(model.parameters())
    model.layer(torch.randn(2, 64)).sum().backward()
    opt.step()
    for step in steps:
        save_sharded(prepare_checkpoint(tmp_path, step) / SHARDED_DIR, model, opt)
        save_checkpoint(tmp_path, step, model=model, processor=None, optimizer=None, scheduler=None,
                        state={"pool": {}}, sharded=True)
    return tmp_path / "checkpoints", model


def _damage(path, how):
    if how == "truncate":
        _truncate(path)
    elif how == "delete":
        path.unlink()
    else:  # garbage where the file was
        path.write_bytes(b"not a checkpoint")


@pytest.mark.parametrize(("broken", "how"), [("sharded/__0_0.distcp", "truncate"), ("sharded/__0_0.distcp", "delete"),
                                             ("sharded/.metadata", "truncate"), ("sharded/.metadata", "delete"),
                                             ("sharded/.metadata", "garbage")])
def test_a_torn_sharded_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path, caplog, broken, how):
    root, model = _run_sharded(tmp_path)
    newest = root / "step-000003"
    assert latest_checkpoint(tmp_path) == newest and not list((newest / "model").glob("*.safetensors"))
    assert torch.equal(consolidated_model_state(newest)["layer.weight"], model.layer.weight)
    _damage(newest / broken, how)
    with caplog.at_level(logging.WARNING, logger="syngrpo.rundir.checkpoint"):
        assert latest_checkpoint(tmp_path) == root / "step-000002"
    assert str(newest / "sharded") in caplog.text
    with pytest.raises(ConfigError, match="step-000003/sharded"):
        latest_checkpoint(newest)


def test_a_sharded_save_that_never_finished_is_not_a_checkpoint(tmp_path):
    _run_sharded(tmp_path, steps=(1,))
    model = TinyModel()
    save_sharded(prepare_checkpoint(tmp_path, 2) / SHARDED_DIR, model, None)  # rank 0 died before completing
    assert latest_checkpoint(tmp_path).name == "step-000001"


class _Pwned:
    """Unpickling this would run a command (``os.system``): what a crafted ``.metadata`` could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_sharded_checkpoint_whose_metadata_would_run_code_is_refused_without_running_it(tmp_path):
    import pickle

    root, _ = _run_sharded(tmp_path, steps=(1, 2))
    marker = tmp_path / "pwned"
    (root / "step-000002" / "sharded" / ".metadata").write_bytes(pickle.dumps(_Pwned(marker)))
    assert "posix.system is not allowed" in checkpoint_problem(root / "step-000002")
    assert latest_checkpoint(tmp_path) == root / "step-000001"
    with pytest.raises(pickle.UnpicklingError):
        consolidated_model_state(root / "step-000002")
    assert not marker.exists()


def _flip_middle(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["bit rot in a shard", "config.json deleted", "state file deleted"])
def test_a_sharded_checkpoint_damaged_inside_its_files_is_skipped(tmp_path, caplog, damage):
    root, _ = _run_sharded(tmp_path)
    newest = root / "step-000003"
    path = {"bit rot in a shard": newest / "sharded" / "__0_0.distcp",
            "config.json deleted": newest / "model" / "config.json",
            "state file deleted": newest / "optimizer.safetensors"}[damage]
    if damage == "bit rot in a shard":
        _flip_middle(path)  # same size: only the checksum written with it can tell
    else:
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="syngrpo.rundir.checkpoint"):
        assert latest_checkpoint(tmp_path) == root / "step-000002"
    assert str(path) in caplog.text


def test_a_sharded_save_of_nan_weights_is_never_resumed(tmp_path):
    """Through the trainer's own sharded save (``run_state.save``): the ranks' finding goes into the manifest."""
    from types import SimpleNamespace

    from syngrpo.scale.parallel import Parallel
    from syngrpo.train.run_state import save

    root, model = _run_sharded(tmp_path, steps=(1,))
    opt = torch.optim.AdamW(model.parameters())
    with torch.no_grad():
        model.layer.weight[0, 0] = float("inf")
    save(Parallel(), tmp_path, 2, sharded=True, bundle=SimpleNamespace(model=model, processor=None), optimizer=opt,
         scheduler=None, precision=SimpleNamespace(state_dict=dict), keep_last=None, state=lambda: {"pool": {}})
    manifest = json.loads((root / "step-000002" / "manifest.json").read_text())
    assert manifest["nonfinite"] == ["model.layer.weight"]
    assert {"sharded/.metadata", "sharded/__0_0.distcp"} <= set(manifest["files"])
    assert "model.layer.weight" in checkpoint_problem(root / "step-000002")
    assert latest_checkpoint(tmp_path) == root / "step-000001"


def test_a_checkpoint_of_an_older_version_still_resumes_and_is_still_checked(tmp_path):
    """Before the manifest and the state file: ``optimizer.pt`` (torch.save), no checksums."""
    from safetensors.torch import load_file, save_file

    from syngrpo.rundir.checkpoint import load_state

    root = _run(tmp_path, steps=(1, 2))
    for ckpt in (root / "step-000001", root / "step-000002"):
        state, blob = load_state(ckpt)
        torch.save(blob, ckpt / "optimizer.pt")
        (ckpt / "optimizer.safetensors").unlink()
        (ckpt / "manifest.json").unlink()
        assert checkpoint_problem(ckpt) is None
        again = load_state(ckpt)[1]
        assert torch.equal(again["rng"]["torch"], blob["rng"]["torch"])
        assert again["rng"]["python"] == blob["rng"]["python"]
    weights = root / "step-000002" / "model" / "model.safetensors"
    tensors = load_file(weights)
    tensors["layer.bias"][3] = float("nan")
    save_file(tensors, weights)  # no checksum to catch it: the scan of the weights does
    assert "NaN" in checkpoint_problem(root / "step-000002")
    assert latest_checkpoint(tmp_path) == root / "step-000001"
