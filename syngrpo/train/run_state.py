"""What a run carries across time and machines: its checkpoints, and the files rank 0 alone has.

Nothing assumes a shared disk between nodes (docs/training.md, "Memory and scale"):

- **saving** (:func:`save`): the weights are the float32 masters and the optimizer state is keyed by
  parameter name, so any strategy resumes it.  Sharded (FSDP, ``parallel.checkpoint``): every rank
  writes its own shards into rank 0's checkpoint directory at once (DCP, over the side group, so a
  slow disk is bounded by ``parallel.main_wait``), then rank 0 adds the small files.  Otherwise the
  full state is gathered on rank 0 (FSDP) or taken from its replica, and rank 0 writes it alone;
- **resuming** (:func:`find_checkpoint`, :func:`restore`): rank 0 finds and reads the checkpoint and
  broadcasts what the other ranks need, except a sharded checkpoint that every rank sees, of which
  each rank reads its own slices;
- **samples** (:func:`ship_samples`, :func:`share_replacements`): synthesized images are files on rank 0's
  disk; the other ranks receive them as bytes and write them into their own run directory.

The checkpoint files themselves are :mod:`syngrpo.rundir.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError
from syngrpo.rundir.checkpoint import (
    DCP_METADATA,
    SHARDED_DIR,
    checkpoint_name,
    choose_checkpoint,
    consolidated_optimizer_state,
    is_sharded,
    load_sharded,
    load_state,
    no_checkpoint_message,
    prepare_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_sharded,
)
from syngrpo.rundir.checkpoint_files import checkpoint_files, hash_files, nonfinite_names
from syngrpo.scale.parallel import Parallel
from syngrpo.types import Sample


def ship_samples(par: Parallel, records: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """Rank 0's sample records on every rank, their image files sent as bytes (nodes share no disk).

    The other ranks write the images into their own run directory and get records pointing there.
    """
    if not par.enabled:
        return records
    payload = None
    if par.is_main:
        payload = [(r, Path(r["image"]).read_bytes() if Path(r["image"]).is_file() else None) for r in records]
    payload = par.broadcast(payload)
    if par.is_main:
        return records
    folder = run_dir / "synth" / "received"
    out = []
    for record, data in payload:
        if data is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / Path(record["image"]).name
            path.write_bytes(data)
            record = {**record, "image": str(path)}
        out.append(record)
    return out


@contextlib.contextmanager
def removed_if_setup_fails(run_dir: Path, *, owner: Callable[[], bool]) -> Iterator[None]:
    """A run whose setup fails before it writes ``config.yaml`` leaves no run directory it created (a failed
    check, a policy that does not load, a data server that does not start): ``owner()`` (rank 0) removes it."""
    fresh = not run_dir.exists()
    try:
        yield
    except BaseException:
        if fresh and owner() and not (run_dir / "config.yaml").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def share_replacements(par: Parallel, replacements: list[Any], pool: Any, run_dir: Path) -> None:
    """Rank 0's synthesized samples of this step into every other rank's pool (images as bytes, so every
    rank's pool stays the same without a shared disk); nothing to do in one process."""
    if not par.enabled:
        return
    arrived = par.broadcast([(r.job.origin_id, r.job.base_generation) for r in replacements])
    records = ship_samples(par, [r.sample.to_dict() for r in replacements], run_dir)
    if not par.is_main:
        for (origin_id, base_generation), sample in zip(arrived, records, strict=True):
            pool.replace(origin_id, Sample.from_dict(sample), base_generation=base_generation)


def find_checkpoint(par: Parallel, resume_from: Path) -> tuple[Path | None, Path | None, str]:
    """(the checkpoint to resume from, known on rank 0 only; the sharded checkpoint every rank reads its slices of;
    what was skipped on the way, for the run log).

    Rank 0 checks every candidate whole (:func:`~syngrpo.rundir.checkpoint.choose_checkpoint`) and takes the
    newest that is.  FSDP and a sharded checkpoint that every rank sees (one filesystem): each rank reads its
    own slices of it (on any number of ranks); otherwise rank 0 reads it whole and the others get it by broadcast.
    """
    choice = choose_checkpoint(resume_from) if par.is_main else None  # hashes every file it trusts: rank 0 alone
    par.wait_for_main()
    ckpt = choice.path if choice is not None else None
    if not par.broadcast(ckpt is not None):
        raise ConfigError(par.broadcast(no_checkpoint_message(resume_from) if par.is_main else None))
    skipped = choice.summary() if choice is not None else ""
    if par.sharded and par.broadcast(is_sharded(ckpt) if par.is_main else None):
        seen = par.sees_same_file(ckpt / SHARDED_DIR / DCP_METADATA if par.is_main else None)
        return ckpt, (seen.parent if seen is not None else None), skipped
    return ckpt, None, skipped


def restore(par: Parallel, ckpt: Path | None, *, dcp_resume: Path | None, run_dir: Path, model: Any, optimizer: Any,
            scheduler: Any, precision: Any, pool: Any, smoother: Any) -> int:
    """Put a checkpoint's state into the run's components (every rank); returns its step.

    Step, data pool, smoother, optimizer (each rank its slices, or rank 0's gathered state), schedule,
    gradient scaler and RNGs; the pool's synthesized images reach the other ranks as bytes.
    """
    state, blob, optim_state = None, None, None
    if par.is_main:
        state, blob = load_state(ckpt)
        optim_state = blob.pop("optimizer", None)
        if is_sharded(ckpt) and dcp_resume is None:  # in one process, or ranks without rank 0's disk
            optim_state = consolidated_optimizer_state(ckpt)
    par.wait_for_main()  # rank 0 read the optimizer state alone (the gathered format: all of it)
    state, blob = par.broadcast((state, blob))
    replaced = state["pool"]["replaced"]  # synthesized images: files on rank 0's disk, sent as bytes
    state["pool"]["replaced"] = dict(zip(replaced, ship_samples(par, list(replaced.values()), run_dir), strict=True))
    pool.load_state_dict(state["pool"])
    smoother.load_state_dict(state["smoother"])
    if dcp_resume is not None:  # weights and optimizer state: each rank reads its own slices
        load_sharded(dcp_resume, model, optimizer, process_group=par.side_group)
    else:
        par.load_optimizer_state(model, optimizer, optim_state)
    if blob.get("scheduler") is not None:
        scheduler.load_state_dict(blob["scheduler"])
    precision.load_state_dict(blob.get("precision", {}))
    restore_rng_state(blob["rng"])
    return int(state["step"])


def sharded_layout(par: Parallel, choice: str, run_dir: Path, say: Callable[[str], None]) -> bool:
    """Whether checkpoints are written sharded (``parallel.checkpoint``; a collective under FSDP).

    Sharded needs every rank to write into rank 0's run directory: ``auto`` checks that the ranks
    share it and otherwise gathers on rank 0 (the layout nodes without a shared disk need).
    """
    if not par.sharded or choice == "full":
        return False
    shared = par.shared_path(run_dir / "checkpoints" if par.is_main else None)
    if shared is None:
        if choice == "sharded":
            raise ConfigError("parallel.checkpoint: sharded needs every rank to see rank 0's run directory "
                              f"({run_dir}); use parallel.checkpoint: full (or auto) without a shared disk")
        say("checkpoints gathered on rank 0: the ranks do not share its run directory")
    return shared is not None


def save(par: Parallel, run_dir: Path, step: int, *, sharded: bool, bundle: Any, optimizer: Any, scheduler: Any,
         precision: Any, keep_last: int | None, state: Callable[[], dict[str, Any]]) -> Path:
    """Checkpoint ``step`` (see the module doc); ``state()`` is the JSON part, asked on rank 0.  Every rank
    waits until it is on disk (``parallel.main_wait``)."""
    path = run_dir / "checkpoints" / checkpoint_name(step)
    common = dict(model=bundle.model, processor=bundle.processor, optimizer=None, scheduler=scheduler,
                  keep_last=keep_last, extra_torch={"precision": precision.state_dict()})
    if sharded:
        tmp = Path(par.broadcast(str(prepare_checkpoint(run_dir, step)) if par.is_main else None))
        save_sharded(tmp / SHARDED_DIR, bundle.model, optimizer, process_group=par.side_group)
        digests, nonfinite = _shard_checks(par, tmp, bundle.model, optimizer)
        if par.is_main:
            path = save_checkpoint(run_dir, step, state=state(), sharded=True, digests=digests, nonfinite=nonfinite,
                                   **common)
    else:
        model_state = par.full_model_state(bundle.model)  # collectives: every rank takes part
        optimizer_state = par.optimizer_state(bundle.model, optimizer)
        if par.is_main:
            path = save_checkpoint(run_dir, step, state=state(), model_state=model_state,
                                   optimizer_state=optimizer_state, **common)
    return path


def _shard_checks(par: Parallel, tmp: Path, model: Any, optimizer: Any) -> tuple[dict[str, str], list[str]]:
    """What the manifest says of a sharded save, found by every rank at once: the SHA-256 of the shard files
    (each rank hashes every world-th one) and the tensors whose local slices hold NaN or inf."""
    files = [f"{SHARDED_DIR}/{n}" for n in checkpoint_files(tmp / SHARDED_DIR)]
    mine = hash_files(tmp, files[par.rank::par.world] if par.enabled else files)
    bad = nonfinite_names(model.state_dict(), "model") + nonfinite_names(optimizer.state_dict()["state"], "optimizer")
    found = par.gather((mine, bad))
    return {k: v for digests, _ in found for k, v in digests.items()}, sorted({n for _, b in found for n in b})
