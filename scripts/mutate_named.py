"""The trainer-wiring errors of issue #23, each applied to a scratch copy of syngrpo: a default-suite test must fail.

    .venv/bin/python scripts/mutate_named.py              # every mutation below, then a table of what caught each
    .venv/bin/python scripts/mutate_named.py -k sign      # the mutations whose name contains "sign"
    .venv/bin/python scripts/mutate_named.py --list       # the mutations, without running anything
    .venv/bin/python scripts/mutate_named.py --tests tests/trainer/test_trainer_step.py   # against other tests

``scripts/mutate --named`` runs this.  Each mutation is one textual edit of the code as a reader of the paper
would get it wrong (a flipped sign, a switch ignored, the wrong group's value); it is applied to a copy of
``syngrpo/`` in a temporary directory that goes first on ``PYTHONPATH``, so the working tree is never touched, and
the wiring tests run against the copy with ``-x``: the first failing test is what caught it.  A mutation whose
text is no longer in the code is reported as ``stale`` (update it here with the code it mutates); the unmutated
copy runs first and must pass, or nothing after it means anything.  mutmut's run (``scripts/mutate``) covers
every small edit of the same modules blindly; this list keeps the ones issue #23 named, by name.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the tests that pin the step's wiring, fastest to fail first (all in the default suite)
TESTS = [
    "tests/trainer/test_step_wiring.py",
    "tests/trainer/test_eq5_8_wiring.py",
]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    why: str


MUTATIONS = [
    Mutation("advantage sign flipped", "syngrpo/train/trainer.py",
             "advantages = self.estimator(rewards.matrix).reshape(-1)",
             "advantages = -self.estimator(rewards.matrix).reshape(-1)",
             "issue #23: left every trainer test green"),
    Mutation("advantages from R_acc alone", "syngrpo/train/trainer.py",
             "advantages = self.estimator(rewards.matrix).reshape(-1)",
             "advantages = self.estimator(torch.tensor(rewards.accuracy, dtype=torch.float32).view(-1, G))"
             ".reshape(-1)",
             "issue #23: caught only incidentally"),
    Mutation("the update gets the advantages negated", "syngrpo/train/trainer.py",
             "update = self.update(rollout, advantages, keep)",
             "update = self.update(rollout, -advantages, keep)",
             "the report would still show the right advantages"),
    Mutation("the update ascends the loss", "syngrpo/train/update.py",
             "self.precision.backward(loss * weight)",
             "self.precision.backward(-loss * weight)",
             "a sign error between the loss and the optimizer"),
    Mutation("description_selection: random ignored", "syngrpo/train/trainer.py",
             'if cfg.synthesis.description_selection == "random" else None)',
             'if False else None)',
             "issue #23: left every trainer test green"),
    Mutation("eq. 8 picks the argmin", "syngrpo/train/rewards.py",
             "scores = [0.0] * G if rng is not None else rewards.diversity[b]",
             "scores = [0.0] * G if rng is not None else [-x for x in rewards.diversity[b]]",
             "the worst-calibrated description sent"),
    Mutation("eq. 8 reads the first group's rewards", "syngrpo/train/rewards.py",
             "scores = [0.0] * G if rng is not None else rewards.diversity[b]",
             "scores = [0.0] * G if rng is not None else rewards.diversity[0]",
             "another prompt's R_diversity"),
    Mutation("rewards.diversity_weight ignored", "syngrpo/train/rewards.py",
             '"diversity": [self.diversity_weight * r for g in div_groups for r in g]',
             '"diversity": [r for g in div_groups for r in g]',
             "issue #23: left every trainer test green"),
    Mutation("term weights ignored", "syngrpo/train/rewards.py",
             "parts[term.key] = [term.weight * v for v in raw[term.key]]",
             "parts[term.key] = [v for v in raw[term.key]]",
             "rewards.terms[].weight"),
    Mutation("R_diversity left out of r (eq. 7)", "syngrpo/train/rewards.py",
             "totals = [sum(p[n] for p in parts.values()) for n in range(B * G)]  # eq. 7",
             'totals = [sum(p[n] for k, p in parts.items() if k != "diversity") for n in range(B * G)]',
             "eq. 7 without its third term"),
    Mutation("R_acc added to r when it is not a term", "syngrpo/train/rewards.py",
             "totals = [sum(p[n] for p in parts.values()) for n in range(rows)]",
             'totals = [sum(p[n] for p in parts.values()) + (0.0 if "accuracy" in parts else acc[n]) '
             "for n in range(rows)]",
             "which terms enter eq. 7"),
    Mutation("eq. 6 target unsmoothed", "syngrpo/train/rewards.py",
             "div_groups.append([diversity_reward(s, v_smooth[b]) for s in scores])",
             "div_groups.append([diversity_reward(s, v_raw[b]) for s in scores])",
             "Ṽ(q) replaced by V(q)"),
    Mutation("eq. 6 target of another group", "syngrpo/train/rewards.py",
             "div_groups.append([diversity_reward(s, v_smooth[b]) for s in scores])",
             "div_groups.append([diversity_reward(s, v_smooth[(b + 1) % B]) for s in scores])",
             "a score compared with the wrong prompt's target"),
    Mutation("synthesis.smoothing ignored", "syngrpo/train/trainer.py",
             "DiversitySmoother(cfg.synthesis.gamma, enabled=cfg.synthesis.smoothing)",
             "DiversitySmoother(cfg.synthesis.gamma, enabled=True)",
             "the Figure 7 ablation switch"),
    Mutation("V(q) measured on the totals", "syngrpo/train/rewards.py",
             "v_raw = [ground_truth_diversity(acc[b * G:(b + 1) * G]) for b in range(B)]",
             "v_raw = [ground_truth_diversity([sum(p[b * G + i] for p in parts.values()) for i in range(G)]) "
             "for b in range(B)]",
             "eq. 4 is the spread of R_acc"),
]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, str]:
    with log.open("w") as out:
        rc = subprocess.call(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return rc, log.read_text(errors="replace")


def check(mutation: Mutation | None, work: Path, tests: list[str]) -> tuple[str, str, float]:
    """(status, detail, seconds): ``killed``/first failing test, ``survived``, ``stale``, or ``baseline``'s own."""
    copy = work / "tree"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(ROOT / "syngrpo", copy / "syngrpo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    if mutation is not None:
        path = copy / mutation.file
        text = path.read_text(encoding="utf-8")
        if text.count(mutation.old) != 1:
            return "stale", f"{mutation.old!r} occurs {text.count(mutation.old)} times in {mutation.file}", 0.0
        path.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(copy) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    rc, out = _run([sys.executable, "-m", "pytest", "-q", "-x", "-rf", "-p", "no:cacheprovider", *tests],
                   copy, env, work / "pytest.log")
    seconds = time.perf_counter() - started
    # the copy, not the working tree, must be what the tests imported
    probe = subprocess.run([sys.executable, "-c", "import syngrpo; print(syngrpo.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not probe.startswith(str(copy)):
        raise SystemExit(f"the scratch copy is not what Python imports (it imports {probe}): nothing would be measured")
    failed = re.findall(r"^FAILED (\S+)", out, flags=re.M)
    if rc == 0:
        return "survived", "every test passed", seconds
    if failed:
        return "killed", failed[0].split("/")[-1], seconds
    tail = "\n".join(out.strip().splitlines()[-5:])
    return "error", f"pytest exited {rc} without a failing test:\n{tail}", seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", dest="pattern", default="", help="only the mutations whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the mutations and stop")
    ap.add_argument("--tests", nargs="+", default=TESTS, metavar="PATH",
                    help="the test files to run instead (e.g. the suite before a test was added, to see it miss)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.pattern.lower() in m.name.lower()]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.file}: {m.old!r} -> {m.new!r}")
        return 0
    if not chosen:
        print(f"no mutation's name contains {args.pattern!r}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="syngrpo-mutate-") as tmp:
        work = Path(tmp)
        print(f"baseline: the unmutated copy against {' '.join(args.tests)} ...", flush=True)
        status, detail, seconds = check(None, work, args.tests)
        if status != "survived":  # "survived" = every test passed
            print(f"the unmutated code fails the wiring tests ({detail}); fix that first", file=sys.stderr)
            return 1
        print(f"baseline passes ({seconds:.0f} s)\n", flush=True)
        rows = []
        for n, m in enumerate(chosen, 1):
            print(f"[{n}/{len(chosen)}] {m.name} ...", end=" ", flush=True)
            status, detail, seconds = check(m, work, args.tests)
            print(f"{status} ({seconds:.0f} s): {detail}", flush=True)
            rows.append((m, status, detail))
    print("\n| mutation | where | caught by |\n|---|---|---|")
    for m, status, detail in rows:
        caught = f"`{detail}`" if status == "killed" else f"**{status}**: {detail}"
        print(f"| {m.name} | `{m.file}` | {caught} |")
    bad = [m.name for m, status, _ in rows if status != "killed"]
    if bad:
        print(f"\nnot caught: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
