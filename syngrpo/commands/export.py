"""``syngrpo export``: a serving copy of a trained policy (``save_pretrained`` in the dtype you serve in).

Checkpoints hold the float32 master weights, so that a resume loses no update
(docs/training.md, "Precision").  Serving wants half of that: ``export`` loads a run's
latest checkpoint (or a given checkpoint or model directory), casts it and writes a
``save_pretrained`` directory with the processor, ready for ``from_pretrained``, vLLM or
``syngrpo eval --checkpoint DIR``.  A sharded checkpoint (FSDP) is consolidated on the way:
``--dtype float32`` turns it into a plain ``save_pretrained`` copy of the masters.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a serving copy (save_pretrained, e.g. bfloat16) of a run or checkpoint",
        description="Load the float32 weights of a run's latest checkpoint (or a checkpoint / model directory), "
                    "cast them to --dtype and write a save_pretrained model directory with its processor. "
                    "See docs/training.md.",
    )
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                   help="a run directory (its latest checkpoint), a checkpoint directory, or a model directory")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16",
                   help="dtype of the exported weights (default: bfloat16)")
    p.add_argument("--out", required=True, help="directory to write (must not exist or be empty)")
    p.set_defaults(func=run)


def export_policy(checkpoint: str | Path, out: str | Path, *, dtype: str = "bfloat16") -> Path:
    """Write ``checkpoint``'s policy to ``out`` in ``dtype`` (``save_pretrained`` + processor); returns ``out``."""
    from syngrpo.errors import ConfigError
    from syngrpo.scale.precision import Precision
    from syngrpo.train.evaluate import load_checkpoint_policy, resolve_model_dir

    source = resolve_model_dir(checkpoint)  # a LoRA checkpoint of adapters only is read merged into its base
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"--out {str(target)!r} exists and is not empty")
    # the weights in the dtype a run of `model.dtype: <dtype>` computes in (one reading of the name)
    bundle = load_checkpoint_policy(source, dtype=Precision.for_model(dtype, "cpu").load_dtype(trains=False),
                                    device="cpu")
    target.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(str(target), safe_serialization=True)
    bundle.processor.save_pretrained(str(target))
    readable_as_umask_says(target)
    return target


def readable_as_umask_says(folder: Path) -> None:
    """Give every file in ``folder`` the mode a plain ``open()`` would have (``0o666`` less the umask).

    transformers writes ``model.safetensors`` through a private temporary file (mode 0600) and renames it, so
    an export served by another user or a container was unreadable there while its config was not.
    """
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    out = export_policy(args.checkpoint, args.out, dtype=args.dtype)
    print(f"wrote {args.dtype} weights and the processor to {out}")
    return 0
