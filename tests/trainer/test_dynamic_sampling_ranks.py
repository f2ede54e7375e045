"""Dynamic sampling under ``torchrun --nproc_per_node=2``: the ranks refill in lockstep and train on equal shares.

Each rank keeps its contiguous half of every global draw.  The test reward gives a spread only to the samples
at chosen positions of the pool's draw order, so every figure is known by hand (global batch 4, share 2 a
rank, G = 3; positions with a spread: 0, 1, 4, 6, 7):

* draw 1 = positions 0-3: rank 0 keeps 0 and 1 (its share), rank 1 keeps nothing; the ranks gather their
  counts and both see 2 groups missing on rank 1, 2 of 4 kept so far: each draws ceil(2 × 4 / 2) = 4, at most
  its share 2, so a global refill of 4 = positions 4-7;
* draw 2: rank 0 gets 4 (kept, its surplus) and 5, rank 1 gets 6 and 7 (both kept): nothing missing, stop.

So both ranks roll out twice (a rank that stopped early would leave the other waiting in a collective), rank 0
trains on 0 and 1, rank 1 on 6 and 7, the step reports 2 tries, 8 prompts, 3 groups dropped, 1 surplus, and the
weights and pools stay identical.  The file doubles as the worker script torchrun runs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SIGNAL_AT = (0, 1, 4, 6, 7)


def worker(policy: str, run_dir: str, out: str) -> None:
    import torch

    from syngrpo.config import TrainConfig
    from syngrpo.config.io import load_config
    from syngrpo.hookspecs import hookimpl
    from syngrpo.testing import registry_with
    from syngrpo.train.trainer import Trainer

    torch.set_num_threads(1)
    ids: set[str] = set()

    def signal_for(responses, samples, *, task, frames=None):
        """Rows of a sample in ``ids`` score 0, 1, 2 within their group; every other row scores 0."""
        seen: dict[str, int] = {}
        values = []
        for s in samples:
            seen[s.id] = seen.get(s.id, -1) + 1
            values.append(float(seen[s.id]) if s.id in ids else 0.0)
        return values

    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register("signal_for", lambda **o: signal_for, description="test reward: spread for listed samples")

    sets = [f"model.policy={policy}", "model.device=cpu", "model.dtype=float32", "data.toy.n_train=8",
            "data.toy.n_eval=4", "data.toy.image_size=56", "data.toy.options={}", "rollout.num_generations=3",
            "rollout.max_new_tokens=8", "optim.batch_size=4", "optim.max_steps=1", "synthesis.mode=off",
            "rewards.terms=[{name: signal_for}]", "algorithm.beta=0", "logging.progress=false",
            "logging.tensorboard=false", "logging.plots=false", "eval.at_end=false",
            "algorithm.dynamic_sampling={enabled: true, metric: reward, max_tries: 4, at_cap: error}"]
    cfg = load_config(TrainConfig, None, sets)
    with Trainer(cfg, run_dir, registry=registry_with(Plugin(), autoload=True)) as trainer:
        trainer.setup()
        order = [s.id for s in copy.deepcopy(trainer.pool).draw(8)]
        ids.update(order[i] for i in SIGNAL_AT)
        batches = []
        collect = trainer.collect
        trainer.collect = lambda step: batches.append(collect(step)) or batches[-1]  # what the step trained on
        metrics = trainer.train_step(1)
        digest = hashlib.sha256()
        for _, p in sorted(trainer.bundle.model.state_dict().items()):
            digest.update(p.detach().cpu().numpy().tobytes())
        report = {
            "rank": trainer.par.rank, "world": trainer.par.world, "weights": digest.hexdigest(),
            "trained": [order.index(s.id) for s in batches[0].samples],
            "dynamic": {k: v for k, v in metrics.items() if k.startswith("dynamic/")},
            "position": trainer.pool.position,
        }
        Path(out, f"rank{trainer.par.rank}.json").write_text(json.dumps(report))


@pytest.mark.slow
def test_two_ranks_refill_in_lockstep_and_train_on_their_shares(tiny_policy_dir, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", __file__, "--policy", str(tiny_policy_dir),
           "--workdir", str(run), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r1["world"]) == (2, 2)
    assert (r0["trained"], r1["trained"]) == ([0, 1], [6, 7])
    expected = {"dynamic/tries": 2.0, "dynamic/prompts_drawn": 8.0, "dynamic/groups_dropped": 3.0,
                "dynamic/zero_variance_frac": 3 / 8, "dynamic/groups_surplus": 1.0, "dynamic/groups_filled": 0.0}
    assert r0["dynamic"] == expected == r1["dynamic"]
    assert r0["weights"] == r1["weights"] and r0["position"] == r1["position"] == 8


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="one dynamic-sampling step on two ranks (started by torchrun)")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    worker(args.policy, args.workdir, args.out)
