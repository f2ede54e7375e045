"""Pooling studies that ran other seeds or arms of the same study into one table and one set of figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError
from syngrpo.experiments.config import StudyConfig
from syngrpo.experiments.methods import ARMS
from syngrpo.experiments.report import results_table, write_figures

#: config keys that may differ between studies merged into one table (which seeds and arms each one ran)
MERGE_FREE_KEYS = ("seed", "seeds", "arms", "warm_start", "quick")


def merge_studies(study_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """One table and one set of figures from finished studies that ran other seeds or arms of the same study.

    Seeds of one study can run as several processes or machines (``--set seed=K --seeds N`` with
    ``--set warm_start=...``); this pools their runs. Refused when the studies differ in anything but
    :data:`MERGE_FREE_KEYS` (another recipe is another study), when they started from different warm starts,
    or when two of them ran the same arm and seed. The run directories are linked, not copied, into
    ``out_dir/runs``; ``out_dir`` must be new or an earlier merge (never one of the studies).
    """
    dirs = [Path(d) for d in study_dirs]
    if len(dirs) < 2:
        raise ConfigError("--merge needs at least two study directories")
    out = Path(out_dir)
    if any(out.resolve() == d.resolve() for d in dirs):
        raise ConfigError(f"--out {out} is one of the studies to merge: give the merged table a directory of its own")
    if (out / "summary.json").is_file() and "merged_from" not in json.loads((out / "summary.json").read_text()):
        raise ConfigError(f"--out {out} holds a study of its own; merging there would overwrite it")
    summaries, configs = [], []
    for d in dirs:
        for name in ("summary.json", "study_config.json"):
            if not (d / name).is_file():
                raise ConfigError(f"{d}: no {name} (not a finished study)")
        summaries.append(json.loads((d / "summary.json").read_text()))
        # validated, so a study written before a key existed compares with that key's default
        configs.append(StudyConfig.model_validate(json.loads((d / "study_config.json").read_text()))
                       .model_dump(mode="json"))

    def recipe(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k not in MERGE_FREE_KEYS}

    first = recipe(configs[0])
    for d, c, sm in zip(dirs[1:], configs[1:], summaries[1:], strict=True):
        diff = sorted(k for k in set(recipe(c)) | set(first) if recipe(c).get(k) != first.get(k))
        if diff:
            raise ConfigError(f"{d} is another study than {dirs[0]}: its config differs in {', '.join(diff)}")
        if not _same_warm_start(summaries[0], sm) or sm["n"] != summaries[0]["n"]:
            raise ConfigError(f"{d} started from another warm start or other splits than {dirs[0]} "
                              "(point every part at one study's sft/ with --set warm_start=...)")
    runs: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], Path] = {}
    for d, sm in zip(dirs, summaries, strict=True):
        for run in sm["runs"]:
            key = (run["arm"], int(run["seed"]))
            if key in seen:
                raise ConfigError(f"arm {key[0]} seed {key[1]} ran in both {seen[key]} and {d}")
            seen[key] = d
            runs.append(run)
    if not runs:
        raise ConfigError("no finished runs in the studies to merge")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for old in (out / "runs").iterdir():  # an earlier merge's links: the figures must show this merge's runs only
        if old.is_symlink():
            old.unlink()
    for (arm, seed), d in seen.items():
        (out / "runs" / f"{arm}-seed{seed}").symlink_to((d / "runs" / f"{arm}-seed{seed}").resolve(),
                                                        target_is_directory=True)
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    seeds_of = {a: sorted(s for arm, s in seen if arm == a) for a in arms}
    cfg = StudyConfig.model_validate({**configs[0], "arms": arms, "seed": min(s for _, s in seen),
                                      "seeds": max(len(v) for v in seeds_of.values())})
    summary = {**summaries[0], "runs": runs, "seconds": sum(float(sm.get("seconds", 0.0)) for sm in summaries),
               "merged_from": [str(d) for d in dirs], "seeds": seeds_of}
    (out / "study_config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(results_table(summary, cfg))
    write_figures(cfg, out)
    return summary


def _same_warm_start(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two study summaries started from one warm start: its stamp where both can tell (a reused warm
    start carries its original's), else its scores on the shared splits."""
    ids = [_warm_start_id(s["sft"]) for s in (a, b)]
    if None not in ids:
        return ids[0] == ids[1]
    return a["sft"]["metrics"] == b["sft"]["metrics"]


def _warm_start_id(sft: dict[str, Any]) -> str | None:
    if "warm_start_stamp" in sft:
        return sft["warm_start_stamp"]
    if "reused_from" in sft:  # reused by an older syngrpo: ask the original, if it is on this disk
        original = Path(sft["reused_from"]) / "study_sft.json"
        return json.loads(original.read_text()).get("stamp") if original.is_file() else None
    return sft.get("stamp")


