"""The kill rate per module of the last ``scripts/mutate`` run, and the diff of every mutant that survived.

    .venv/bin/python scripts/mutation_report.py           # Markdown on stdout, also mutants/report.md
    .venv/bin/python scripts/mutation_report.py --no-diffs

Reads mutmut's own records (``mutants/<module>.py.meta``: each mutant's pytest exit code) for the files
``[tool.mutmut] only_mutate`` names in pyproject.toml (what ``scripts/mutate`` runs).  A mutant is *killed* when a selected test failed on it (a time-out counts: the mutant
made the tests hang); it *survived* when they all passed; *no tests* when no selected test ran its function.
The kill rate is killed / (killed + survived + no tests): a mutant no test reaches counts against it.  The time-outs
are also counted on their own ("timed out", included in "killed"): mutmut stops a mutant at a CPU-time limit set
from the unmutated tests' duration, so on a loaded machine every mutant of a function whose tests are slow to start
can "time out", a kill that says nothing about the tests; a column of them is a reason to rerun that module.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def subset(root: Path) -> list[str]:
    """The file globs mutmut mutates (``[tool.mutmut] only_mutate``)."""
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["mutmut"]["only_mutate"]


#: mutmut's exit codes, by what they mean here (mutmut/stats.py)
TIMED_OUT = {36, 24, -24, 152, 255}  # mutmut's time-outs (SIGXCPU and its own)
KILLED = {1, 3} | TIMED_OUT  # a failing test, pytest's internal error, a time-out
SURVIVED = {0}
NO_TESTS = {5, 33}


def records(root: Path) -> dict[str, dict[str, int | None]]:
    """{module file: {mutant name: exit code}} for the mutants of the files :func:`subset` names."""
    out: dict[str, dict[str, int | None]] = {}
    globs = subset(root)
    for meta in sorted((root / "mutants" / "syngrpo").rglob("*.py.meta")):
        module = str(meta.relative_to(root / "mutants")).removesuffix(".meta")
        codes = json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
        if codes and any(fnmatch.fnmatch(module, g) for g in globs):
            out[module] = codes
    return out


def status(code: int | None) -> str:
    if code is None:
        return "not run"
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "other"


def diff(name: str) -> str:
    """``mutmut show``'s diff of one mutant (run from the repository root)."""
    shown = subprocess.run([str(ROOT / ".venv" / "bin" / "mutmut"), "show", name], cwd=ROOT, capture_output=True,
                           text=True)
    lines = [line for line in shown.stdout.splitlines() if line.startswith(("+", "-")) and
             not line.startswith(("+++", "---"))]
    return "\n".join(lines) or shown.stdout.strip() or shown.stderr.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-diffs", action="store_true", help="the table only")
    args = ap.parse_args(argv)
    by_module = records(ROOT)
    if not by_module:
        print("no mutation results: run scripts/mutate first", file=sys.stderr)
        return 1
    lines = ["| module | mutants | killed | timed out | survived | no tests | not run | kill rate |",
             "|---|---|---|---|---|---|---|---|"]
    survivors: list[tuple[str, str]] = []
    total: Counter[str] = Counter()
    for module, codes in by_module.items():
        counts = Counter(status(c) for c in codes.values())
        counts["timed out"] = sum(c in TIMED_OUT for c in codes.values())
        total.update(counts)
        judged = counts["killed"] + counts["survived"] + counts["no tests"]
        rate = f"{100 * counts['killed'] / judged:.1f} %" if judged else "-"
        lines.append(f"| `{module}` | {len(codes)} | {counts['killed']} | {counts['timed out']} | {counts['survived']} "
                     f"| {counts['no tests']} "
                     f"| {counts['not run']} | {rate} |")
        survivors += [(module, name) for name, code in sorted(codes.items()) if status(code) in ("survived", "no tests")]
    judged = total["killed"] + total["survived"] + total["no tests"]
    lines.append(f"| all | {len(set().union(*by_module.values()))} | {total['killed']} | {total['timed out']} "
                 f"| {total['survived']} | {total['no tests']} "
                 f"| {total['not run']} | {100 * total['killed'] / max(judged, 1):.1f} % |")
    if survivors:
        lines += ["", f"Surviving mutants ({len(survivors)}):"]
        for module, name in survivors:
            lines.append(f"\n`{name}` ({module})")
            if not args.no_diffs:
                lines += ["```diff", diff(name), "```"]
    text = "\n".join(lines)
    print(text)
    (ROOT / "mutants" / "report.md").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
