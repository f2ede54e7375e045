"""``--resume`` with a damaged newest checkpoint falls back to the newest intact one and names the broken file."""

from __future__ import annotations

import logging

import pytest
import torch

from syngrpo.checkpoint import checkpoint_problem, latest_checkpoint, save_checkpoint
from syngrpo.errors import ConfigError


class TinyModel(torch.nn.Module):
    """A real module whose ``save_pretrained`` writes real safetensors weights (what a checkpoint holds)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)

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


@pytest.mark.parametrize("broken", ["model/model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_names_the_broken_file(tmp_path, caplog, broken):
    root = _run(tmp_path)
    assert latest_checkpoint(tmp_path) == root / "step-000003"
    _truncate(root / "step-000003" / broken)
    with caplog.at_level(logging.WARNING, logger="syngrpo.checkpoint"):
        found = latest_checkpoint(tmp_path)
    assert found == root / "step-000002"
    assert str(root / "step-000003" / broken) in caplog.text
    assert checkpoint_problem(root / "step-000002") is None


def test_a_damaged_checkpoint_named_directly_or_all_damaged_is_a_clear_error(tmp_path):
    root = _run(tmp_path, steps=(1, 2))
    _truncate(root / "step-000002" / "optimizer.pt")
    with pytest.raises(ConfigError, match=r"step-000002/optimizer.pt"):
        latest_checkpoint(root / "step-000002")
    _truncate(root / "step-000001" / "model" / "model.safetensors")
    with pytest.raises(ConfigError, match="every checkpoint .* is damaged"):
        latest_checkpoint(tmp_path)
