"""``torchrun --nproc_per_node=2 syngrpo train``: two CPU ranks train one policy and keep one data pool.

Each rank takes half of every global batch; DDP averages the gradients, so the
weights stay identical; rank 0 alone talks to the data server (in-process,
synchronous here) and broadcasts the synthesized samples, so every rank's pool
stays identical; diversity smoothing sees the whole global batch on every rank.
The file doubles as the worker script torchrun runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

STEPS = 3


def worker(policy: str, run_dir: str, out: str) -> None:
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.train.trainer import Trainer

    torch.set_num_threads(1)
    sets = [f"model.policy={policy}", "model.device=cpu", "data.toy.n_train=8", "data.toy.n_eval=4",
            "data.toy.image_size=56", "rollout.num_generations=3", "rollout.max_new_tokens=80",
            "rollout.temperature=0.8", "optim.batch_size=4", f"optim.max_steps={STEPS}", "optim.lr=1e-4",
            "synthesis.mode=sync", "synthesis.transport=inprocess", "logging.progress=false",
            "logging.tensorboard=false", "logging.plots=false", "eval.at_end=true", "eval.batch_size=4"]
    cfg = load_config(TrainConfig, None, sets)
    with Trainer(cfg, run_dir) as trainer:
        trainer.train()
        digest = hashlib.sha256()
        for _, p in sorted(trainer.bundle.model.state_dict().items()):
            digest.update(p.detach().cpu().numpy().tobytes())
        report = {
            "rank": trainer.par.rank,
            "world": trainer.par.world,
            "weights": digest.hexdigest(),
            "pool": [(s.id, s.generation, s.description) for s in trainer.pool.samples()],
            "smoother": trainer.smoother.state_dict(),
            "position": [trainer.pool.epoch, trainer.pool.position],
        }
        Path(out, f"rank{trainer.par.rank}.json").write_text(json.dumps(report))


@pytest.mark.slow
def test_two_ranks_keep_identical_weights_pools_and_smoothing(sft_policy_dir, tmp_path):
    from syngrpo.rundir.runlog import read_jsonl

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", __file__, "--policy", str(sft_policy_dir),
           "--workdir", str(run), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r1["world"]) == (2, 2)
    assert r0["weights"] == r1["weights"]
    assert r0["pool"] == r1["pool"] and r0["position"] == r1["position"]
    assert any(generation > 0 for _, generation, _ in r0["pool"])  # synthesized samples reached both ranks
    assert r0["smoother"] == r1["smoother"] and r0["smoother"]["step"] == STEPS
    records = read_jsonl(run / "metrics.jsonl")  # rank 0 alone writes the run directory
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert "eval/acc@0.5" in records[-1]
    assert "data parallel over 2 processes" in (run / "train.log").read_text()
    assert (run / "checkpoints" / f"step-{STEPS:06d}" / "trainer_state.json").is_file()


def test_rank_metrics_average_but_memory_peaks_and_maxima_take_the_worst_rank():
    """A per-phase memory peak averaged over ranks would hide the rank that runs out of memory."""
    from syngrpo.scale.parallel import Parallel

    class TwoRanks(Parallel):
        def gather(self, obj):
            return [obj, {**obj, "loss": 3.0, "memory/update_peak_gib": 70.0, "completion/max_length": 9,
                          "synthesis/done": 99}]

    par = TwoRanks(rank=0, world=2)
    out = par.mean_metrics({"loss": 1.0, "memory/update_peak_gib": 60.0, "completion/max_length": 5,
                            "synthesis/done": 4}, main_only=("synthesis/",))
    assert out == {"loss": 2.0, "memory/update_peak_gib": 70.0, "completion/max_length": 9, "synthesis/done": 4}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="a two-rank training run (started by torchrun)")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    worker(args.policy, args.workdir, args.out)

