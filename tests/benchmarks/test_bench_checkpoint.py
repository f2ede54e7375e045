"""What checking a checkpoint whole costs, against what writing it costs (issue #24).

``--resume`` trusts a checkpoint only after :func:`~syngrpo.rundir.checkpoint_files.checkpoint_problem`
has read every byte of it (SHA-256 against the manifest written with it).  The figure is the time of that
check over the time of the save that wrote the checkpoint (same files, same run, interleaved); the save
includes the hashing that writes the manifest.  A ratio near or below 1 means a resume pays for its check
about what a save pays for its checkpoint.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from syngrpo.rundir import checkpoint_files
from syngrpo.rundir.checkpoint import save_checkpoint

from .support import interleaved, median

pytestmark = pytest.mark.benchmark


class Config:
    def save_pretrained(self, path):
        from pathlib import Path

        (Path(path) / "config.json").write_text('{"model_type": "bench"}')


class Model(torch.nn.Module):
    """Linear layers of float32 masters, with AdamW state after one step (what a checkpoint holds)."""

    def __init__(self, layers: int, width: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
        self.config = Config()

    def save_pretrained(self, path, safe_serialization=True, state_dict=None):
        from pathlib import Path

        from safetensors.torch import save_file

        Path(path).mkdir(parents=True, exist_ok=True)
        save_file(dict(state_dict or self.state_dict()), str(Path(path) / "model.safetensors"))
        self.config.save_pretrained(path)


def test_whole_check_of_a_checkpoint_costs_about_what_writing_it_does(tmp_path, figures, quick):
    model = Model(layers=2 if quick else 8, width=256 if quick else 1024)
    opt = torch.optim.AdamW(model.parameters())
    sum(layer(torch.ones(1, layer.in_features)).sum() for layer in model.layers).backward()
    opt.step()

    def save():
        shutil.rmtree(tmp_path / "checkpoints", ignore_errors=True)
        return save_checkpoint(tmp_path, 1, model=model, processor=None, optimizer=opt, scheduler=None,
                               state={"pool": {}})

    ckpt = save()

    def check():
        checkpoint_files._PASSED.clear()  # a fresh process: nothing remembered
        assert checkpoint_files.checkpoint_problem(ckpt) is None

    rounds = 2 if quick else 7
    times = interleaved({"save": save, "check": check}, rounds=rounds, warmup=0 if quick else 1)
    size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    ratio = median(times["check"]) / median(times["save"])
    figures("checkpoint: whole check (SHA-256) / save time", ratio, target="<= 1.5x", met=ratio <= 1.5,
            checkpoint_mb=size / 1e6, check_s=median(times["check"]), save_s=median(times["save"]),
            check_gb_per_s=size / 1e9 / median(times["check"]), rounds=rounds)
