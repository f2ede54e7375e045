"""Issue 20 item 4: host memory per rank while an FSDP run loads its policy, and checkpoint write time.

Loading the old way (every rank loads the whole float32 policy and deep-copies it for the bf16
reference, then shards both) against the new way (``Trainer._load_sharded_policy``: rank 0 loads,
the other ranks build on the meta device and receive their shards; the reference is the policy's
shards cast); writing the old way (the full state gathered on rank 0, written by it:
``parallel.checkpoint: full``) against the new way (every rank writes its DCP shards:
``parallel.checkpoint: auto``).  Both ways run through ``Trainer.setup`` and ``Trainer.save``; only
the old loading sequence is replayed here (:class:`OldWay`), as ``setup`` ran it before.

A Qwen2.5-VL of the tiny family scaled up by its config (text hidden 1024, 6 layers, vision hidden
256, depth 4: 63 M parameters, 241 MB in float32), random weights, ``model.dtype: bfloat16`` (float32
masters, bf16 compute and reference), 1, 2 and 3 gloo ranks.  Host RSS is read from ``/proc/self/status``
(``VmHWM``, the peak, reset through ``/proc/self/clear_refs`` before each phase).  The table goes to
stdout and, with ``SYNGRPO_SCALE_IO_OUT=FILE``, to a JSON file; docs/training.md ("Loading and saving
at scale") holds a run of::

    .venv/bin/python -m pytest -p no:cacheprovider -m slow tests/test_scale_io.py -s

The file doubles as the worker torchrun starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODEL = {"text_hidden": 1024, "layers": 6, "vision_hidden": 256, "vision_depth": 4}
WAYS = ("old", "new")
WORLDS = (1, 2, 3)
MIB = 2**20


def _status(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process, MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def _reset_peak() -> None:
    """Start a new peak: ``VmHWM`` restarts from the current RSS (Linux ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def _trainer_classes():
    from syngrpo.train.trainer import Trainer

    class Measured(Trainer):
        """The trainer, timing and measuring the host memory of its policy-loading phase."""

        figures: dict

        def _load_sharded_policy(self, *args, **kwargs):
            self.figures = {"rss_before_load_mib": _status("VmRSS")}
            _reset_peak()
            t0 = time.perf_counter()
            self._load(*args, **kwargs)
            self.figures.update(load_s=time.perf_counter() - t0, load_peak_mib=_status("VmHWM"),
                                rss_after_load_mib=_status("VmRSS"))

        def _load(self, *args, **kwargs):
            Trainer._load_sharded_policy(self, *args, **kwargs)

    class OldWay(Measured):
        """What ``setup`` did under FSDP before issue 20 (up to commit 9e19a51): every rank loaded the whole
        float32 policy and deep-copied it for the reference (cast to bf16); both were sharded afterwards."""

        def _load(self, ckpt, resuming, policy_path, load_kwargs, sft_dir):
            from syngrpo.models.policy import load_policy, reference_model

            self.bundle = load_policy(policy_path, **load_kwargs)
            self.precision.upcast_trainable(self.bundle.model)
            self.ref_model = self.par.wrap_reference(reference_model(self.bundle, dtype=self.precision.compute))
            self.par.wrap(self.bundle.model, self.precision)

    return {"old": OldWay, "new": Measured}


def worker(way: str, model_dir: str, run_dir: str, out: str) -> None:
    """One rank: ``setup`` (measuring the loading), AdamW state for every parameter, ``save`` (measured)."""
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    sets = [f"model.policy={model_dir}", "model.device=cpu", "model.dtype=bfloat16", "parallel.strategy=fsdp",
            f"parallel.checkpoint={'full' if way == 'old' else 'auto'}", "parallel.timeout=900",
            "algorithm.beta=0.04", "data.toy.n_train=6", "data.toy.n_eval=1", "data.toy.image_size=56",
            "optim.batch_size=6", "synthesis.mode=off", "sft.enabled=false", "eval.at_start=false",
            "eval.at_end=false", "logging.progress=false", "logging.tensorboard=false", "logging.plots=false",
            "logging.gallery=false"]
    cfg = load_config(TrainConfig, None, sets)
    # warm-up: the model family's code imported and a processor read once, so the figures count tensors
    from syngrpo.models.policy import load_policy

    load_policy(model_dir, empty=True)
    with _trainer_classes()[way](cfg, run_dir) as trainer:
        trainer.setup()
        figures = dict(trainer.figures)
        with torch.no_grad():  # AdamW state as after a step (a zero-gradient step at lr 0 changes no weight)
            for group in trainer.optimizer.param_groups:
                group["lr"] = 0.0
            for p in trainer.trainable:
                p.grad = torch.zeros_like(p)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.par.barrier()
        figures["rss_before_save_mib"] = _status("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        path = trainer.save()
        figures.update(save_s=time.perf_counter() - t0, save_peak_mib=_status("VmHWM"))
        every = trainer.par.gather(figures)
        if trainer.par.is_main:
            size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
            params = sum(p.numel() for p in trainer.bundle.base_model.parameters())
            Path(out).write_text(json.dumps({"way": way, "world": world, "ranks": every, "checkpoint_bytes": size,
                                             "params": params, "layout": sorted(p.name for p in Path(path).iterdir())}))


def _run(way: str, world: int, model_dir: Path, tmp: Path) -> dict:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp / f"{way}-{world}.json"
    cmd = [torchrun, "--standalone", f"--nproc_per_node={world}", __file__, "--way", way, "--model", str(model_dir),
           "--workdir", str(tmp / f"run-{way}-{world}"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=600, start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shutil.rmtree(tmp / f"run-{way}-{world}")  # checkpoints of a few hundred MB each
    return json.loads(out.read_text())


def table(results: list[dict]) -> str:
    """The markdown table of docs/training.md: per rank, MiB of host RSS and seconds."""
    lines = ["| ranks | way | rank | RSS before load | load peak (+ over before) | RSS after load | save peak "
             "(+ over before) | save s | checkpoint MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for rank, f in enumerate(r["ranks"]):
            lines.append(
                f"| {r['world']} | {r['way']} | {rank} | {f['rss_before_load_mib']:.0f} | "
                f"{f['load_peak_mib']:.0f} (+{f['load_peak_mib'] - f['rss_before_load_mib']:.0f}) | "
                f"{f['rss_after_load_mib']:.0f} | "
                f"{f['save_peak_mib']:.0f} (+{f['save_peak_mib'] - f['rss_before_save_mib']:.0f}) | "
                f"{f['save_s']:.2f} | {r['checkpoint_bytes'] / 1e6:.0f} |")
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_loading_into_shards_and_sharded_checkpoints_cut_per_rank_host_memory(tmp_path):
    from syngrpo.models.tiny_policy import build_tiny_policy

    model_dir = build_tiny_policy(tmp_path / "policy", seed=0, **MODEL)
    results = [_run(way, world, model_dir, tmp_path) for world in WORLDS for way in WAYS]
    print("\nparameters:", results[0]["params"])
    print(table(results))
    if os.environ.get("SYNGRPO_SCALE_IO_OUT"):
        Path(os.environ["SYNGRPO_SCALE_IO_OUT"]).write_text(json.dumps(results, indent=1))
    fp32_mib = results[0]["params"] * 4 / MIB
    by = {(r["way"], r["world"]): r for r in results}
    for world in WORLDS:
        old, new = by[("old", world)], by[("new", world)]
        assert "sharded" in new["layout"] and "sharded" not in old["layout"]

        def load(r, rank):
            f = r["ranks"][rank]
            return f["load_peak_mib"] - f["rss_before_load_mib"]

        def save(r, rank):
            f = r["ranks"][rank]
            return f["save_peak_mib"] - f["rss_before_save_mib"]

        # the old way holds two whole float32 models at once on every rank (the policy and its deep copy)
        assert all(load(old, rank) > 1.5 * fp32_mib for rank in range(world)), (world, old)
        # the new way: rank 0 loads one whole model (from_pretrained's transient, the mapped file and the
        # tensors, is the same either way); every other rank one shard of the policy and of the reference
        assert load(new, 0) <= load(old, 0) + 32, (world, new, old)
        for rank in range(1, world):  # float32 policy shard + bf16 reference shard: 1.5 / N of a float32 model
            assert load(new, rank) < (1.5 / world) * fp32_mib + 100, (world, rank, new)
        if world > 1:  # gathering onto rank 0 costs it the whole model and AdamW state (3x the float32 model)
            assert save(old, 0) > 2.5 * fp32_mib and save(new, 0) < 0.1 * save(old, 0), (world, old, new)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="one rank of the loading / checkpoint measurement (torchrun)")
    ap.add_argument("--way", choices=WAYS, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    worker(args.way, args.model, args.workdir, args.out)
