"""Two torchrun "nodes" that share no run directory still train one policy (issue 10, item 4).

Two ``torchrun --nnodes=2 --node_rank=0|1 --nproc_per_node=1`` launches on 127.0.0.1, each
with its own ``--out``: nothing either rank reads may live only in the other's folder.  So

* the SFT warm start reaches rank 1 as tensors (rank 1's folder never gets an ``sft/``);
* synthesized images reach rank 1 as bytes, written into rank 1's own folder;
* ``--resume`` is read on rank 0 only: rank 1 is given a path that does not exist on its
  side, and receives the config, weights, optimizer state, pool and images by broadcast.

Both ranks end with the same weights.  The file doubles as the worker torchrun runs: it
goes through the ``syngrpo train`` argument handling, then reports a hash of its weights.

Under FSDP the two "nodes" first share the disk (sharded checkpoints, each rank writing its own
shards); then node 1 runs in a mount namespace where node 0's run directory is hidden (a tmpfs over
it), as on two machines: resuming needs rank 0 to consolidate the sharded checkpoint and send the
shards, and the next checkpoint falls back to the gathered layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SETS = ["model.device=cpu", "data.toy.n_train=8", "data.toy.n_eval=2", "data.toy.image_size=56",
        "rollout.num_generations=3", "rollout.max_new_tokens=80", "rollout.temperature=0.8", "optim.batch_size=2",
        "optim.max_steps=2", "optim.lr=1e-4", "logging.save_every=1", "synthesis.mode=sync",
        "synthesis.transport=inprocess", "synthesis.spawn_server=false", "sft.enabled=true", "sft.steps=60",
        "sft.lr=5e-3", "sft.batch_size=4", "eval.at_start=false", "eval.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "logging.plots=false", "parallel.timeout=120"]


def worker(argv: list[str], report: str) -> None:
    """``syngrpo train ARGV`` as the CLI resolves it, then this rank's weights hash and pool images."""
    import torch

    from syngrpo.cli import build_parser
    from syngrpo.commands.train import resolve_run
    from syngrpo.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg, run_dir, resume = resolve_run(build_parser().parse_args(argv))
    with Trainer(cfg, run_dir, resume=resume) as trainer:
        trainer.train()
        digest = hashlib.sha256()
        for _, tensor in sorted(trainer.bundle.model.state_dict().items()):
            if hasattr(tensor, "full_tensor"):  # an FSDP shard: the whole tensor (a collective, same order)
                tensor = tensor.full_tensor()
            digest.update(tensor.detach().cpu().numpy().tobytes())
        synthesized = [s.image for s in trainer.pool.samples() if s.generation > 0]
        Path(f"{report}.rank{trainer.par.rank}.json").write_text(json.dumps({
            "weights": digest.hexdigest(), "run_dir": str(trainer.run_dir), "step": trainer.step,
            "world": trainer.par.world, "synthesized": synthesized,
            "images_readable": all(Path(p).is_file() for p in synthesized),
        }))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _can_hide_directories() -> bool:
    """Whether a process can get a mount namespace of its own here (root, or user namespaces allowed)."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


def _two_nodes(report: Path, node0: list[str], node1: list[str], *, hide_from_node1: Path | None = None) -> list[dict]:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for node, argv in enumerate((node0, node1)):
        cmd = [torchrun, "--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
               f"--master_port={port}", __file__, "--report", str(report), *argv]
        if node == 1 and hide_from_node1 is not None:  # node 1 sees an empty directory where node 0's run is
            cmd = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(hide_from_node1), *cmd]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                      start_new_session=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a node did not finish in 400 s")
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
    return [json.loads(Path(f"{report}.rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_two_nodes_with_separate_run_directories_train_and_resume_to_the_same_weights(tmp_path):
    from syngrpo.models.tiny_policy import build_tiny_policy
    from syngrpo.rundir.runlog import read_jsonl

    policy = build_tiny_policy(tmp_path / "policy", seed=0)  # every node can load the base policy
    a, b = tmp_path / "node0-run", tmp_path / "node1-run"
    sets = [x for s in [f"model.policy={policy}", *SETS] for x in ("--set", s)]
    r0, r1 = _two_nodes(tmp_path / "first", ["train", "--out", str(a), *sets], ["train", "--out", str(b), *sets])
    assert (r0["world"], r1["world"]) == (2, 2) and r0["step"] == r1["step"] == 2
    assert r0["weights"] == r1["weights"]
    assert (a / "sft").is_dir() and not (b / "sft").exists()  # the warm start reached node 1 as tensors
    assert not (b / "checkpoints").exists()
    assert r1["synthesized"], "no synthesized sample reached the pool"
    assert all(Path(p).is_relative_to(b) for p in r1["synthesized"]) and r1["images_readable"]

    # resume: node 1 is told a path that does not exist on its side; only rank 0 reads the checkpoint
    missing = tmp_path / "not-on-node1" / "node0-run"
    more = ["--set", "optim.max_steps=3"]
    r0, r1 = _two_nodes(tmp_path / "second", ["train", "--resume", str(a), *more],
                        ["train", "--resume", str(missing), "--out", str(b), *more])
    assert r0["step"] == r1["step"] == 3 and r0["weights"] == r1["weights"]
    assert r1["run_dir"] == str(b) and not missing.exists()
    assert all(Path(p).is_relative_to(b) for p in r1["synthesized"]) and r1["images_readable"]
    assert [r["step"] for r in read_jsonl(a / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.skipif(not _can_hide_directories(), reason="needs a mount namespace (unshare -m) to hide a directory")
def test_fsdp_nodes_without_a_shared_disk_resume_a_sharded_checkpoint_and_gather_the_next(tmp_path):
    """Issue 20 item 4: sharded checkpoints where the disk is shared, the gathered layout where it is not."""
    from syngrpo.models.tiny_policy import build_tiny_policy
    from syngrpo.rundir.checkpoint import latest_checkpoint, model_dir
    from syngrpo.rundir.sharded_checkpoint import consolidated_model_state, is_sharded

    policy = build_tiny_policy(tmp_path / "policy", seed=0)
    a, b = tmp_path / "node0-run", tmp_path / "node1-run"
    sets = [x for s in [f"model.policy={policy}", *SETS, "parallel.strategy=fsdp"] for x in ("--set", s)]
    r0, r1 = _two_nodes(tmp_path / "first", ["train", "--out", str(a), *sets], ["train", "--out", str(b), *sets])
    assert r0["weights"] == r1["weights"] and r0["step"] == 2
    shared = latest_checkpoint(a)
    assert is_sharded(shared) and len(list((shared / "sharded").glob("*.distcp"))) == 2  # one file per rank
    assert not (b / "checkpoints").exists()  # node 1 wrote its shards into node 0's run directory

    missing = tmp_path / "not-on-node1" / "node0-run"
    more = ["--set", "optim.max_steps=3"]
    r0, r1 = _two_nodes(tmp_path / "second", ["train", "--resume", str(a), *more],
                        ["train", "--resume", str(missing), "--out", str(b), *more], hide_from_node1=a)
    assert r0["step"] == r1["step"] == 3 and r0["weights"] == r1["weights"]
    gathered = latest_checkpoint(a)
    assert gathered.name == "step-000003" and not is_sharded(gathered)
    assert (model_dir(gathered) / "model.safetensors").is_file()
    assert "checkpoints gathered on rank 0: the ranks do not share its run directory" in (a / "train.log").read_text()
    assert consolidated_model_state(shared).keys()  # the sharded one is still there, intact


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] != ["--report"]:
        sys.exit("usage: test_multinode.py --report PREFIX train ...")
    worker(args[2:], args[1])
