"""The toy study's report from its run directories: the Table 1 table, the Fig. 2 / 7 / 8 analogues, Fig. 6.

Reads what :mod:`.study` wrote (``summary.json``, each run's ``metrics.jsonl`` and ``gallery/``); the kept-data
tables of docs/study.md (:mod:`.regenerate`) read ``docs/study/data`` instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syngrpo.experiments.config import SPLIT_LABELS, SPLITS, StudyConfig
from syngrpo.experiments.methods import ARM_LABELS, ARMS
from syngrpo.experiments.stats import mean_std
from syngrpo.plugins import get_registry
from syngrpo.rundir.runlog import read_jsonl


def results_table(summary: dict[str, Any], cfg: StudyConfig) -> str:
    """Markdown in the shape of the paper's Table 1: Acc@0.5 (%) per split, mean ± std over seeds."""
    head = "| Method | " + " | ".join(SPLIT_LABELS[s] for s in SPLITS) + " |"
    lines = [head, "|" + "---|" * (len(SPLITS) + 1)]
    chance = summary["chance"]
    labels = get_registry().create("tasks", cfg.task).chance_baseline_labels
    for name in dict.fromkeys(n for s in SPLITS for n in chance[s]):  # the task's chance baselines, in its order
        cells = [f"{100 * chance[s][name]:.2f}" if name in chance[s] else "" for s in SPLITS]
        lines.append(f"| Chance: {labels.get(name, name)} | " + " | ".join(cells) + " |")
    lines.append("| SFT (warm start of every arm) | "
                 + " | ".join(f"{100 * summary['sft']['metrics'][s]['acc@0.5']:.2f}" for s in SPLITS) + " |")
    for arm in cfg.arms:
        runs = [r for r in summary["runs"] if r["arm"] == arm]
        if not runs:
            continue
        cells = []
        for s in SPLITS:
            m, sd = mean_std([100 * r["metrics"][s]["acc@0.5"] for r in runs])
            cells.append(f"{m:.2f} ± {sd:.2f}")
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cells) + " |")
    n = summary["n"]
    steps = sorted({r["steps"] for r in summary["runs"]})
    lines.append("")
    counts = {a: len(v) for a, v in summary.get("seeds", {}).items()}  # a merged study's seeds per arm
    per_arm = (f"{cfg.seeds} seed(s) per arm" if len(set(counts.values())) <= 1 else
               "seeds per arm: " + ", ".join(f"{ARM_LABELS[a]} {n}" for a, n in counts.items()))
    lines.append(f"Acc@0.5 in %, greedy decoding; {per_arm} (mean ± sample std); "
                 f"{', '.join(f'{k} n={v}' for k, v in n.items())}; RL steps per run: {steps}.")
    return "\n".join(lines) + "\n"


def _curves(run_dirs: Sequence[Path], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """x (progress), mean, min and max of ``key`` over runs, step by step."""
    series = []
    for d in run_dirs:
        recs = [r for r in read_jsonl(d / "metrics.jsonl") if r.get(key) is not None and "progress" in r]
        series.append([(float(r["progress"]), float(r[key])) for r in recs])
    series = [s for s in series if s]
    if not series:
        return [], [], [], []
    n = min(len(s) for s in series)
    xs = [series[0][i][0] for i in range(n)]
    cols = [[s[i][1] for s in series] for i in range(n)]
    return xs, [sum(c) / len(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (for readability of noisy per-step curves)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def write_figures(cfg: StudyConfig, out: Path) -> list[Path]:
    """Fig. 2, Fig. 7 and Fig. 8 analogues as PNGs in ``out``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    runs_dir = out / "runs"
    dirs = {arm: sorted(runs_dir.glob(f"{arm}-seed*")) for arm in cfg.arms}
    written: list[Path] = []
    window = max(1, int(cfg.rl.get("optim", {}).get("max_steps", 20) or 20) // 10)

    # Fig. 2: entropy and diversity against training progress
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "entropy", "Entropy H(q)"), (axes[1], "diversity/v_mean", "Diversity V(q)")):
        for arm in cfg.arms:
            xs, mean, lo, hi = _curves(dirs[arm], key)
            if xs:
                line, = ax.plot(xs, smooth(mean, window), label=ARM_LABELS[arm])
                ax.fill_between(xs, smooth(lo, window), smooth(hi, window), color=line.get_color(), alpha=0.15)
        ax.set_xlabel("training progress (epochs)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Entropy and diversity during RL (mean over seeds, band = min..max, moving average {window})")
    fig.tight_layout()
    path = out / "fig2_entropy_diversity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # Fig. 7: diversity reward with and without smoothing (the same Syn-GRPO runs, eq. 6 vs eq. 5 target)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    arm = "syn_grpo" if "syn_grpo" in cfg.arms else next((a for a in cfg.arms if a.startswith("syn")), None)
    if arm is not None:
        for key, label in (("reward/diversity_raw", "with smoothing (eq. 6)"),
                           ("reward/diversity_unsmoothed", "without smoothing (eq. 5)")):
            xs, mean, _, _ = _curves(dirs[arm], key)
            if xs:
                ax.plot(xs, mean, alpha=0.35, lw=0.8)
                ax.plot(xs, smooth(mean, window), label=label, color=ax.lines[-1].get_color())
    ax.set_xlabel("training progress (epochs)")
    ax.set_ylabel("diversity reward R_diversity")
    ax.set_title(f"{ARM_LABELS.get(arm or '', '')}: diversity reward (faint: per step)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:  # e.g. --arms grpo: no run wrote a diversity reward
        ax.text(0.5, 0.5, "no Syn-GRPO arm in this study", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    path = out / "fig7_diversity_smoothing.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    gallery = write_gallery_figure(dirs.get("syn_grpo") or [], out / "fig8_gallery.png")
    if gallery is not None:
        written.append(gallery)
    return written


def write_gallery_figure(run_dirs: Sequence[Path], path: Path) -> Path | None:
    """One source image and its synthesized versions at successive epochs (paper Fig. 8)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from PIL import Image

    for run_dir in run_dirs:
        entries = read_jsonl(run_dir / "gallery" / "gallery.jsonl")
        by_origin: dict[str, dict[int, dict[str, Any]]] = {}
        for e in entries:
            by_origin.setdefault(e["origin_id"], {}).setdefault(int(e["epoch"]), e)
        if not by_origin:
            continue
        origin, epochs = max(sorted(by_origin.items()), key=lambda kv: len(kv[1]))
        shown = [epochs[k] for k in sorted(epochs)]
        fig, axes = plt.subplots(1, len(shown) + 1, figsize=(2.6 * (len(shown) + 1), 3.0))
        gdir = run_dir / "gallery"
        axes[0].imshow(Image.open(gdir / shown[0]["original"]))
        axes[0].set_title("original", fontsize=9)
        for ax, e in zip(axes[1:], shown, strict=True):
            ax.imshow(Image.open(gdir / e["synthesized"]))
            ax.set_title(f"epoch {int(e['epoch']) + 1}", fontsize=9)
            ax.set_xlabel("\n".join(_wrap(str(e["description"]), 28)[:3]), fontsize=6)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{origin} synthesized at successive epochs ({run_dir.name})", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    return None


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return lines


#: config keys that may differ between studies merged into one table (which seeds and arms each one ran)

def data_size_table(study_dirs: Sequence[str | Path], arms: Sequence[str] | None = None
                    ) -> dict[str, dict[int, dict[str, tuple[float, float, int]]]]:
    """``{arm: {n_train: {split: (mean %, sample std %, runs)}}}`` over finished study directories (``arms``: only those).

    Each directory is one study (``summary.json``), typically the same warm start with another
    ``data.n_train``; runs of one arm and size from several directories are pooled.
    """
    pooled: dict[tuple[str, int], list[dict[str, float]]] = {}
    for d in study_dirs:
        summary = json.loads((Path(d) / "summary.json").read_text())
        n = int(summary["n"]["train"])
        for run in summary["runs"]:
            if arms is not None and run["arm"] not in arms:
                continue
            pooled.setdefault((run["arm"], n), []).append({k: v["acc@0.5"] for k, v in run["metrics"].items()})
    table: dict[str, dict[int, dict[str, tuple[float, float, int]]]] = {}
    for (arm, n), runs in sorted(pooled.items(), key=lambda kv: (list(ARMS).index(kv[0][0]), kv[0][1])):
        table.setdefault(arm, {})[n] = {split: (*mean_std([100 * r[split] for r in runs]), len(runs))
                                        for split in runs[0]}
    return table


def data_size_figure(study_dirs: Sequence[str | Path], path: str | Path,
                     splits: Sequence[str] = ("test_id", "test_ood"), arms: Sequence[str] | None = None) -> Path:
    """The Fig. 6 analogue: Acc@0.5 per arm against the train-split size (:func:`data_size_table`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = data_size_table(study_dirs, arms)
    if not table:
        raise ValueError("no finished runs in the given study directories")
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for arm, by_size in table.items():
            sizes = sorted(by_size)
            ax.errorbar(sizes, [by_size[n][split][0] for n in sizes], yerr=[by_size[n][split][1] for n in sizes],
                        marker="o", capsize=3, label=ARM_LABELS[arm])
        ax.set_xlabel("train images")
        ax.set_ylabel("Acc@0.5 (%)")
        ax.set_title(SPLIT_LABELS.get(split, split))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Accuracy against training-data size (mean ± std over seeds)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
