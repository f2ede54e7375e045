"""Every number the docs report about the experiments, regenerated from the kept run data by one command.

``syngrpo study --report`` reads ``docs/study/data/<experiment>/`` (:mod:`.kept`: ``experiment.json`` and
``runs.jsonl``, copied there from a finished experiment's ``kept/`` by ``--keep DIR``, :func:`keep`) and rewrites

* the blocks between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` in docs/study.md,
  docs/quickstart.md and README.md (:data:`BLOCKS` says which code writes each), and
* the figures under docs/study/ (:func:`figures`).

No number inside a block is typed by hand: ``tests/test_study.py`` regenerates the blocks and compares them with
the docs, so a doc that drifts from its data fails the suite (and the failure prints the command that fixes it).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from syngrpo.errors import ConfigError
from syngrpo.experiments.kept import hits_matrix, read_runs
from syngrpo.experiments.stats import Interval, mean_std, paired_bootstrap, paired_t

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "docs" / "study" / "data"
DOCS = (REPO / "docs" / "study.md", REPO / "docs" / "quickstart.md", REPO / "README.md")
BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)

CONTROL_LABELS = {"grpo": "plain GRPO (`--set synthesis.mode=off`)", "syn_grpo": "Syn-GRPO (the quickstart as shipped)",
                  "grpo_entropy": "GRPO + Entropy Loss", "grpo_entropy_adv": "GRPO + Entropy Adv.",
                  "grpo_offline": "GRPO + Offline Generation", "syn_grpo_no_div": "Syn-GRPO w/o R_diversity"}
MECH_LABELS = {"grpo": "GRPO (continued)", "offline": "GRPO + Offline Generation (kept level)",
               "syn_grpo": "Syn-GRPO", "syn_grpo_fixed": "Syn-GRPO, difficulty fixed",
               "fresh_plain": "Syn-GRPO loop, fresh plain backgrounds"}
#: the steps a "share of groups with signal" averages over: after the first epoch (48 images / 4 a step)
SIGNAL_FROM_STEP = 13


def load(experiment: str, data: Path = DATA) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """``(experiment.json, runs)`` of ``data/<experiment>``, or ``None`` when it has not been kept yet."""
    folder = data / experiment
    if not (folder / "experiment.json").is_file():
        return None
    return json.loads((folder / "experiment.json").read_text()), read_runs(folder / "runs.jsonl")


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def quarter(curve: list[float | None], last: bool) -> float:
    vals = [v for v in curve if v is not None]
    q = max(1, len(vals) // 4)
    part = vals[-q:] if last else vals[:q]
    return sum(part) / len(part)


def paired(rows: list[dict[str, Any]], a: str, b: str, split: str) -> tuple[Interval, Interval] | None:
    """``b − a`` on ``split``: the seed × image paired bootstrap and the paired t over seeds (common seeds)."""
    seeds_a, hits_a = hits_matrix(rows, a, split)
    seeds_b, hits_b = hits_matrix(rows, b, split)
    common = sorted(set(seeds_a) & set(seeds_b))
    if len(common) < 2:
        return None
    A = np.array([hits_a[seeds_a.index(s)] for s in common], dtype=float)
    B = np.array([hits_b[seeds_b.index(s)] for s in common], dtype=float)
    return paired_bootstrap(A, B), paired_t(A.mean(axis=1).tolist(), B.mean(axis=1).tolist())


def verdict(boot: Interval, what: str) -> str:
    """A plain sentence for an interval: shown up, shown down, or not shown (and how large it could be)."""
    if boot.lo > 0:
        return f"{what} is higher: the whole interval lies above zero"
    if boot.hi < 0:
        return f"{what} is lower: the whole interval lies below zero"
    return (f"no difference is shown: the interval contains zero, so the data allow anything from "
            f"{100 * boot.lo:+.1f} to {100 * boot.hi:+.1f} points")


# ---- the quickstart's control ---------------------------------------------------------------------------------


def control_table(exp: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    cfg = exp["config"]
    arms = [a for a in cfg["arms"] if any(r["arm"] == a for r in rows)]
    n_img = next(iter(rows))["eval"]["heldout"]["n"] if rows else cfg["n_heldout"]
    lines = ["| | held-out Acc@0.5, mean ± std over seeds | per seed | R_total first → last quarter | "
             "R_acc first → last quarter |", "|---|---|---|---|---|"]
    if exp.get("start"):
        lines.append(f"| warm start (`tiny-warm-start`, before RL) | "
                     f"{pct(exp['start']['eval']['heldout']['metrics']['acc@0.5'])} | | | |")
    for arm in arms:
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        accs = [100 * r["eval"]["heldout"]["metrics"]["acc@0.5"] for r in mine]
        m, sd = mean_std(accs)
        tot = [(quarter(r["curves"]["reward/total"], False), quarter(r["curves"]["reward/total"], True)) for r in mine]
        acc = [(quarter(r["curves"]["reward/accuracy"], False), quarter(r["curves"]["reward/accuracy"], True))
               for r in mine]
        lines.append(f"| {CONTROL_LABELS.get(arm, arm)}, {len(mine)} seeds | {m:.1f} ± {sd:.1f} | "
                     + " / ".join(f"{a:.1f}" for a in accs)
                     + f" | {np.mean([t[0] for t in tot]):.2f} → {np.mean([t[1] for t in tot]):.2f}"
                     + f" | {np.mean([t[0] for t in acc]):.2f} → {np.mean([t[1] for t in acc]):.2f} |")
    lines += ["", f"Acc@0.5 in % (greedy) on {n_img} held-out images; rewards are sampled (temperature 1), mean over "
              "seeds of each run's first and last quarter of its 36 steps."]
    if "grpo" in arms and "syn_grpo" in arms:
        got = paired(rows, "grpo", "syn_grpo", "heldout")
        if got is not None:
            boot, t = got
            lines += ["", f"**Syn-GRPO − plain GRPO: {boot.text()}** (95 % paired bootstrap over {boot.n_seeds} seeds × "
                      f"{boot.n_images} images; paired t over seeds: [{100 * t.lo:+.1f}, {100 * t.hi:+.1f}], "
                      f"p = {t.p:.2f}). Reading: {verdict(boot, 'Syn-GRPO')}."]
    return "\n".join(lines) + "\n"


def control_claim(exp: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    got = paired(rows, "grpo", "syn_grpo", "heldout")
    if got is None:
        return "The controlled comparison has not finished yet.\n"
    boot, _ = got
    both = {r["seed"] for r in rows if r["arm"] == "grpo"} & {r["seed"] for r in rows if r["arm"] == "syn_grpo"}
    mean = {a: 100 * np.mean([r["eval"]["heldout"]["metrics"]["acc@0.5"] for r in rows
                              if r["arm"] == a and r["seed"] in both]) for a in ("grpo", "syn_grpo")}
    start = exp.get("start")
    before = f"from {pct(start['eval']['heldout']['metrics']['acc@0.5'])} % " if start else ""
    planned = exp["config"]["seeds"]
    short = (f" ({boot.n_seeds} of the {planned} seeds the design asks for: the others did not finish in the time "
             "this run had)" if boot.n_seeds < planned else "")
    return (f"Against its control — the same command with `--set synthesis.mode=off`, plain GRPO from the same warm "
            f"start, {boot.n_seeds} seeds{short}, {boot.n_images} held-out images — Syn-GRPO reaches "
            f"{mean['syn_grpo']:.1f} % and plain GRPO {mean['grpo']:.1f} % ({before}before RL): a difference of "
            f"{boot.text()} (95 % paired bootstrap); {verdict(boot, 'Syn-GRPO')}.\n")


# ---- the mechanism experiment ---------------------------------------------------------------------------------


def signal_share(run: dict[str, Any], from_step: int = SIGNAL_FROM_STEP) -> float:
    """1 − the share of zero-variance R_acc groups, mean over the run's steps ``from_step``.. (1-based)."""
    z = [v for v in run["curves"].get("diversity/zero_variance_groups", [])[from_step - 1:] if v is not None]
    return 1.0 - sum(z) / len(z) if z else float("nan")


def whole_seeds(exp: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """The runs of the seeds whose every arm finished, those seeds, and the seeds with an arm missing.

    The mechanism experiment's analysis unit is the seed (every arm against ``grpo`` on the same seed): an
    experiment stopped early (docs/study.md, amendment 3) is analysed over its whole seeds only, whatever the
    runs of a partial seed say."""
    arms = list(exp["config"]["arms"])
    seeds = sorted({int(r["seed"]) for r in rows})
    whole = [s for s in seeds if all(any(r["arm"] == a and int(r["seed"]) == s for r in rows) for a in arms)]
    return [r for r in rows if int(r["seed"]) in whole], whole, [s for s in seeds if s not in whole]


def seeds_note(exp: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One sentence: how many of the planned seeds the tables use, and which partial seeds they leave out."""
    _, whole, partial = whole_seeds(exp, rows)
    planned = exp["config"]["seeds"]
    text = f"Seeds analysed: {len(whole)} of the {planned} planned, those whose {len(exp['config']['arms'])} arms all finished"
    if whole:
        text += f" ({', '.join(map(str, whole))})"
    if partial:
        n = sum(1 for r in rows if int(r["seed"]) in partial)
        text += (f"; left out: {n} finished run{'s' if n != 1 else ''} of seed{'s' if len(partial) > 1 else ''} "
                 f"{', '.join(map(str, partial))}, whose other arms did not finish before the stop")
    return text + "."


def mechanism_phases(exp: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    ph = exp["phases"]
    c = ph["collapse"]
    lines = ["Phase 1, plain GRPO from the warm start (val: 6 sampled answers per image, share of groups whose R_acc "
             "values are all equal):", "", "| temperature | step: signal-less groups % (R_acc, format) | collapsed |",
             "|---|---|---|"]
    for t in c["tried"]:
        cells = ", ".join(f"{k['step']}: {pct(k['zero_variance'])} ({k['r_acc']:.2f}, {k['format']:.2f})"
                          for k in t["checks"])
        lines.append(f"| {t['temperature']:g} | {cells} | "
                     f"{'at step ' + str(t['reached']['step']) if t['reached'] else 'no'} |")
    chosen = c.get("chosen")
    lines.append("")
    if chosen is None:
        lines.append(f"No temperature reached {pct(c['target'])} % within the step budget: the experiment stopped "
                     "here, as pre-registered.")
        return "\n".join(lines) + "\n"
    lines.append(f"Kept: temperature {chosen['temperature']:g}, the checkpoint of step {chosen['step']} "
                 f"({pct(chosen['zero_variance'])} % signal-less val groups).")
    d = ph.get("difficulty")
    if d:
        lines += ["", "Phase 2, the collapsed checkpoint on the val images synthesized at each level (sampled at "
                  "its temperature):", "", "| level | options | R_acc | signal-less groups % |", "|---|---|---|---|"]
        for name, lv in d["levels"].items():
            opts = ", ".join(f"{k} {v}" for k, v in lv["options"].items())
            mark = " (kept)" if name == d["chosen"] else ""
            lines.append(f"| {name}{mark} | {opts} | {lv['r_acc']:.3f} | {pct(lv['zero_variance'])} |")
    return "\n".join(lines) + "\n"


def mechanism_results(exp: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    cfg = exp["config"]
    if not rows:
        return "No arm has finished yet.\n"
    note = seeds_note(exp, rows)
    rows = whole_seeds(exp, rows)[0]
    arms = [a for a in cfg["arms"] if any(r["arm"] == a for r in rows)]
    if not arms:
        return f"No seed has all its arms finished yet. {note}\n"
    lines = ["| arm | runs | groups with signal, steps 13–50 (%) | test_hard Acc@0.5 | vs GRPO, 95 % paired bootstrap "
             "| test_plain Acc@0.5 | vs GRPO |", "|---|---|---|---|---|---|---|"]
    start = exp.get("start") or {}
    for name, label in (("warm_start", "warm start (`tiny-warm-start`)"), ("collapsed", "the collapsed checkpoint")):
        if name in start:
            ev = start[name]["eval"]
            lines.append(f"| {label} | | | {pct(ev['test_hard']['metrics']['acc@0.5'])} | | "
                         f"{pct(ev['test_plain']['metrics']['acc@0.5'])} | |")
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        sig = mean_std([100 * signal_share(r) for r in mine])
        cells = []
        for split in ("test_hard", "test_plain"):
            acc = mean_std([100 * r["eval"][split]["metrics"]["acc@0.5"] for r in mine])
            cells.append(f"{acc[0]:.1f} ± {acc[1]:.1f}")
            got = paired(rows, "grpo", arm, split) if arm != "grpo" else None
            cells.append(got[0].text() if got else "")
        lines.append(f"| {MECH_LABELS.get(arm, arm)} | {len(mine)} | {sig[0]:.1f} ± {sig[1]:.1f} | " + " | ".join(cells)
                     + " |")
    n_hard = rows[0]["eval"]["test_hard"]["n"]
    n_plain = rows[0]["eval"]["test_plain"]["n"]
    lines += ["", f"Acc@0.5 in % (greedy), mean ± std over seeds; test_hard {n_hard} images, test_plain {n_plain}. "
              "Differences in points, arm − GRPO, seeds and images resampled together (10,000 draws). " + note]
    return "\n".join(lines) + "\n"


def mechanism_predictions(exp: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Each pre-registered prediction, what came out, and whether it held (decided by the rule written with it)."""
    ph = exp["phases"]
    c = ph["collapse"]
    out = ["| # | prediction | what came out | held? |", "|---|---|---|---|"]

    def row(k: int, pred: str, got: str, held: bool | None) -> None:
        out.append(f"| {k} | {pred} | {got} | {'yes' if held else 'no' if held is not None else 'not run'} |")

    reached = {t["temperature"]: t["reached"] for t in c["tried"]}
    t1 = reached.get(1.0)
    lower = [(T, r["step"]) for T, r in reached.items() if T < 1.0 and r is not None]
    row(1, "T = 1.0 does not collapse in 300 steps; 0.7 or 0.5 does within 150",
        "; ".join(f"T {T:g}: {'collapsed at step ' + str(r['step']) if r else 'no collapse'}" for T, r in reached.items())
        + ("" if 1.0 in reached else "; T 1: not tried (so the prediction is untested)"),
        (t1 is None and any(s <= 150 for _, s in lower)) if 1.0 in reached else None)
    d = ph.get("difficulty")
    row(2, "the kept level is L2, L3 or L4", d["chosen"] if d else "—", d["chosen"] in ("L2", "L3", "L4") if d else None)
    note = seeds_note(exp, rows) if rows else ""
    rows, whole, _ = whole_seeds(exp, rows)
    have = {a for a in (r["arm"] for r in rows)}

    def sig(arm: str) -> float:
        return 100 * float(np.mean([signal_share(r) for r in rows if r["arm"] == arm]))

    seeds = {a: len({r["seed"] for r in rows if r["arm"] == a}) for a in have}
    if {"grpo", "syn_grpo", "syn_grpo_fixed", "offline", "fresh_plain"} <= have and min(seeds.values()) >= 2:
        s = {a: sig(a) for a in ("grpo", "syn_grpo", "syn_grpo_fixed", "offline", "fresh_plain")}
        ok = (s["grpo"] <= 30 and s["syn_grpo"] >= s["grpo"] + 20 and s["syn_grpo_fixed"] >= s["grpo"] + 20
              and min(s["grpo"], s["syn_grpo_fixed"]) <= s["offline"] <= max(s["grpo"], s["syn_grpo_fixed"])
              and abs(s["fresh_plain"] - s["grpo"]) <= 10)
        row(3, "signal: GRPO ≤ 30 %; both Syn-GRPO arms ≥ GRPO + 20; offline between; fresh plain within 10 of GRPO",
            ", ".join(f"{a} {v:.1f} %" for a, v in s.items()), ok)
        hard = {a: paired(rows, "grpo", a, "test_hard")[0] for a in ("offline", "syn_grpo", "syn_grpo_fixed",
                                                                      "fresh_plain")}
        sf = paired(rows, "syn_grpo_fixed", "syn_grpo", "test_hard")[0]
        ok = (hard["syn_grpo_fixed"].mean >= 0.03 and hard["syn_grpo_fixed"].lo > 0 and hard["offline"].mean >= 0.03
              and hard["offline"].lo > 0 and abs(sf.mean) <= 0.03 and hard["fresh_plain"].lo <= 0 <= hard["fresh_plain"].hi)
        row(4, "test_hard: fixed and offline ≥ GRPO + 3 points (interval > 0); Syn-GRPO within 3 of fixed; fresh "
               "plain's interval contains 0",
            f"fixed {hard['syn_grpo_fixed'].text()}, offline {hard['offline'].text()}, Syn-GRPO − fixed "
            f"{sf.text()}, fresh plain {hard['fresh_plain'].text()}", ok)
        plain = {a: paired(rows, "grpo", a, "test_plain")[0] for a in ("offline", "syn_grpo", "syn_grpo_fixed",
                                                                        "fresh_plain")}
        row(5, "test_plain: every arm's interval against GRPO contains 0",
            ", ".join(f"{a} {v.text()}" for a, v in plain.items()), all(v.lo <= 0 <= v.hi for v in plain.values()))
        on_off = paired(rows, "offline", "syn_grpo_fixed", "test_hard")[0]
        row(6, "test_hard: fixed − offline interval contains 0", on_off.text(), on_off.lo <= 0 <= on_off.hi)
    else:
        got = "—" if not note else f"{len(whole)} whole seed{'s' if len(whole) != 1 else ''}: a paired interval needs 2"
        for k in (3, 4, 5, 6):
            row(k, "(phase 3)", got, None)
    if note:
        out += ["", f"Predictions 3–6 are judged on the whole seeds only. {note}"]
    return "\n".join(out) + "\n"


#: block name -> (experiment, writer)
BLOCKS: dict[str, tuple[str, Callable[[dict[str, Any], list[dict[str, Any]]], str]]] = {
    "control-table": ("quickstart-control", control_table),
    "control-claim": ("quickstart-control", control_claim),
    "mechanism-phases": ("mechanism", mechanism_phases),
    "mechanism-results": ("mechanism", mechanism_results),
    "mechanism-predictions": ("mechanism", mechanism_predictions),
}


def render(name: str, data: Path = DATA) -> str:
    experiment, writer = BLOCKS[name]
    got = load(experiment, data)
    if got is None:
        return f"(no kept data in docs/study/data/{experiment}/ yet)\n"
    return writer(*got)


def fill(text: str, data: Path = DATA) -> str:
    """``text`` with every generated block rewritten from the kept data."""
    def repl(m: re.Match[str]) -> str:
        if m["name"] not in BLOCKS:
            raise KeyError(f"unknown generated block {m['name']!r}; blocks are {', '.join(BLOCKS)}")
        return m.group(1) + render(m["name"], data) + m.group(4)

    return BLOCK.sub(repl, text)


def figures(data: Path = DATA, out: Path | None = None) -> list[Path]:
    """docs/study/mechanism_signal.png: the share of groups with signal per step, per arm (mean over the whole
    seeds, :func:`whole_seeds`)."""
    got = load("mechanism", data)
    if got is None:
        return []
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    exp, rows = got
    rows = whole_seeds(exp, rows)[0]  # the seeds the tables analyse
    if not rows:  # the phases ran, no whole seed yet: nothing to draw
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in exp["config"]["arms"]:
        curves = [r["curves"].get("diversity/zero_variance_groups") for r in rows if r["arm"] == arm]
        curves = [c for c in curves if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = [1 - float(np.mean([c[i] for c in curves])) for i in range(n)]
        window = 5
        smooth = [float(np.mean(mean[max(0, i - window + 1):i + 1])) for i in range(n)]
        ax.plot(range(1, n + 1), [100 * v for v in smooth], label=f"{MECH_LABELS.get(arm, arm)} ({len(curves)})")
    ax.axvline(SIGNAL_FROM_STEP, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("RL step after the collapsed checkpoint")
    ax.set_ylabel("groups with R_acc signal (%)")
    ax.set_title("Share of training groups whose G answers differ in R_acc (mean over seeds, 5-step average)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = (out or REPO / "docs" / "study") / "mechanism_signal.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def keep(out_dir: str | Path, data: Path = DATA) -> Path:
    """Copy a finished experiment's ``kept/`` (``experiment.json``, ``runs.jsonl``) to ``data/<experiment>/``,
    the folder the docs are regenerated from; returns it."""
    src = Path(out_dir) / "kept"
    meta = src / "experiment.json"
    if not meta.is_file() or not (src / "runs.jsonl").is_file():
        raise ConfigError(f"{out_dir}: no kept data ({src}/experiment.json and runs.jsonl); an experiment writes "
                          "them as its runs finish: run it (syngrpo study --preset ... --out DIR) first")
    name = json.loads(meta.read_text())["experiment"]
    if name not in {experiment for experiment, _ in BLOCKS.values()}:
        raise ConfigError(f"{meta}: experiment {name!r} has no generated blocks in the docs")
    dest = data / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("experiment.json", "runs.jsonl"):
        shutil.copyfile(src / f, dest / f)
    return dest


def regenerate(data: Path = DATA, docs: tuple[Path, ...] = DOCS) -> list[Path]:
    """Rewrite every generated block of ``docs`` and the figures from ``data``; returns what was written."""
    written = []
    for doc in docs:
        if not doc.is_file():
            continue
        old = doc.read_text()
        new = fill(old, data)
        if new != old:
            doc.write_text(new)
            written.append(doc)
    return written + figures(data)
