"""Kept run data: what every table and figure of docs/study.md is regenerated from.

A run directory holds megabytes (checkpoints, images, per-step samples); the study keeps a few kilobytes of each run,
committed under ``docs/study/data/<experiment>/``:

* ``runs.jsonl`` -- one line per (arm, seed) run: the per-step curves the figures and dynamics tables read
  (:data:`CURVES`, rounded), and per evaluation split the task's metrics and each image's Acc@0.5 hit as a bit
  string in hex (the paired bootstrap resamples images, so it needs them one by one);
* ``experiment.json`` -- what the experiment was (its config, the warm start's scores, calibration phases).

:func:`keep_run` turns one finished run into its line, :func:`write_runs` / :func:`read_runs` store and load the
file. Nothing here knows which experiment wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from syngrpo.rundir.runlog import read_jsonl

#: per-step metrics kept from each run's metrics.jsonl (those present)
CURVES = ("reward/total", "reward/accuracy", "reward/format", "reward/diversity", "entropy", "diversity/v_mean",
          "diversity/zero_variance_groups", "batch/synthesized_frac", "progress")
#: decimals kept per value: enough for a mean over 100 steps and 8 seeds to be exact to the printed digit
DECIMALS = 5


def hits_hex(hits: Sequence[bool | int]) -> str:
    """Per-image 0/1 hits as a hex string (4 images a digit, first image the top bit of the first digit)."""
    bits = "".join("1" if h else "0" for h in hits)
    bits += "0" * (-len(bits) % 4)
    return "".join(f"{int(bits[i:i + 4], 2):x}" for i in range(0, len(bits), 4))


def hex_hits(text: str, n: int) -> list[int]:
    """The ``n`` hits :func:`hits_hex` wrote."""
    bits = "".join(f"{int(c, 16):04b}" for c in text)
    if len(bits) < n:
        raise ValueError(f"a hit string of {len(bits)} bits cannot hold {n} images")
    return [int(b) for b in bits[:n]]


def curves_of(run_dir: Path, keys: Iterable[str] = CURVES) -> dict[str, list[float | None]]:
    """The training steps' ``keys`` from ``run_dir/metrics.jsonl`` (step 0, the evaluation row, left out)."""
    rows = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r.get("step", 0) > 0 and "reward/total" in r]
    out: dict[str, list[float | None]] = {}
    for key in keys:
        if any(key in r for r in rows):
            out[key] = [None if r.get(key) is None else round(float(r[key]), DECIMALS) for r in rows]
    return out


def eval_entry(result: Any, threshold: float = 0.5) -> dict[str, Any]:
    """One split's evaluation (:class:`syngrpo.train.evaluate.EvalResult`): metrics and per-image hits.

    A hit is R_acc (IoU) strictly above ``threshold``, the task's Acc@0.5 rule; the entry keeps both so a reader
    can check they agree (``tests/test_study.py`` does)."""
    hits = [r["accuracy"] > threshold for r in result.records]
    return {"metrics": {k: round(float(v), 6) for k, v in result.metrics.items()}, "n": len(hits),
            "hits": hits_hex(hits)}


def keep_run(run_dir: str | Path, *, arm: str, seed: int, evals: dict[str, Any],
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kept line of one run: ``evals`` maps split -> EvalResult (or an already kept entry)."""
    entries = {split: (e if isinstance(e, dict) else eval_entry(e)) for split, e in evals.items()}
    return {"arm": arm, "seed": int(seed), "curves": curves_of(Path(run_dir)), "eval": entries, **(extra or {})}


def write_runs(lines: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """``runs.jsonl``, sorted by arm and seed, one compact line per run."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(lines, key=lambda r: (str(r["arm"]), int(r["seed"])))
    out.write_text("".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in rows))
    return out


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a ``runs.jsonl``; a clear error naming the file when it is missing or broken."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no kept run data (an experiment writes it when its runs finish)")
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{p}:{i}: not a JSON line ({e}); regenerate it from the run directories") from e
        if not {"arm", "seed", "eval"} <= set(row):
            raise ValueError(f"{p}:{i}: a kept run needs arm, seed and eval (got {sorted(row)})")
        out.append(row)
    return out


def hits_matrix(rows: Sequence[dict[str, Any]], arm: str, split: str) -> tuple[list[int], list[list[int]]]:
    """Seeds and the (seeds, images) hits of ``arm`` on ``split``, seeds ascending."""
    mine = sorted((r for r in rows if r["arm"] == arm and split in r["eval"]), key=lambda r: r["seed"])
    return ([r["seed"] for r in mine],
            [hex_hits(r["eval"][split]["hits"], r["eval"][split]["n"]) for r in mine])
