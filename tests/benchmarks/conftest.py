"""Shared machinery of the benchmark suite (issue 5): quick/full mode, one thread, the figures table.

Every figure of ``docs/performance.md`` is a *ratio* of two variants timed in
the same run, interleaved round by round, so that a shared, noisy machine
shifts both alike.  A test records each figure with the ``figures`` fixture;
at the end of the session the table is printed (and written as JSON when
``SYNGRPO_BENCH_RESULTS`` names a file, which ``scripts/bench`` does).

Quick mode (``--benchmark-disable``, or ``SYNGRPO_BENCH_QUICK=1``) runs every
benchmark with few rounds and small sizes: CI uses it so that the suite keeps
running and keeps checking correctness.  No test asserts a timing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Tiny models run fastest on one thread, and two processes that each take both cores of a
# 2-core machine run ~40x slower (REFERENCE.md): every process the suite starts inherits these.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@dataclass
class Figure:
    """One line of the performance table."""

    name: str
    value: float
    unit: str
    target: str
    #: True / False when the target is a bound the value meets or misses; None when only reported
    met: bool | None
    details: dict[str, Any] = field(default_factory=dict)
    test: str = ""

    def line(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "reported"}[self.met]
        return f"{self.name:<52} {self.value:>10.3f} {self.unit:<8} target {self.target:<14} {verdict}"


_FIGURES: list[Figure] = []
#: the machine's load average when the session started (the machines are shared: context for the numbers)
_LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None


def is_quick(config: pytest.Config) -> bool:
    """Quick mode: pytest-benchmark disabled (CI) or ``SYNGRPO_BENCH_QUICK=1``."""
    disabled = bool(config.getoption("benchmark_disable", default=False))
    return disabled or os.environ.get("SYNGRPO_BENCH_QUICK", "") not in ("", "0")


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return is_quick(request.config)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread in this process too (the env vars above only reach processes started later)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FigureRecorder:
    """What a test hands its measured figures to."""

    def __init__(self, test: str, benchmark: Any) -> None:
        self.test = test
        self.benchmark = benchmark

    def __call__(self, name: str, value: float, *, unit: str = "x", target: str = "report",
                 met: bool | None = None, **details: Any) -> Figure:
        fig = Figure(name=name, value=float(value), unit=unit, target=target, met=met, details=details,
                     test=self.test)
        _FIGURES.append(fig)
        if self.benchmark is not None:
            self.benchmark.extra_info[name] = {"value": fig.value, "unit": unit, "target": target, **details}
        return fig


@pytest.fixture
def figures(request) -> FigureRecorder:
    """``figures(name, value, unit=, target=, met=, **details)`` records one figure of the table.

    When the test also uses pytest-benchmark's ``benchmark`` fixture, the figures go into its
    ``extra_info`` too (and so into ``--benchmark-json``).
    """
    bench = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    return FigureRecorder(request.node.nodeid, bench)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _FIGURES:
        return
    mode = "quick" if is_quick(config) else "full"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    terminalreporter.section(f"syngrpo performance figures ({mode} mode; load average at start {_LOAD_AT_START}, "
                             f"at end {load})")
    for fig in _FIGURES:
        terminalreporter.write_line(fig.line())
    out = os.environ.get("SYNGRPO_BENCH_RESULTS")
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"mode": mode, "cpus": os.cpu_count(), "load_at_start": _LOAD_AT_START,
                                    "load_at_end": load,
                                    "figures": [asdict(f) for f in _FIGURES]}, indent=2) + "\n")
        terminalreporter.write_line(f"figures written to {path}")


@pytest.fixture(scope="session")
def warm_policy_dir(tmp_path_factory, quick) -> Path:
    """The default tiny Qwen2.5-VL after a short SFT warm start, so that it writes <description>s.

    A random tiny model never closes a ``<description>`` tag, and without descriptions there
    is nothing to synthesize.  ~100 SFT steps (batch 8) make most responses well formed;
    quick mode takes fewer (most prompts still get one usable description among G = 6).
    """
    from syngrpo.config import TrainConfig
    from syngrpo.train.trainer import Trainer

    root = tmp_path_factory.mktemp("warm-policy")
    cfg = TrainConfig.model_validate({
        "seed": 0,
        "model": {"policy": "tiny", "tiny_dir": str(root / "tiny"), "dtype": "float32", "device": "cpu"},
        "data": {"task": "rec", "toy": {"n_train": 32, "n_eval": 4, "image_size": 112, "seed": 0},
                 "toy_dir": str(root / "data")},
        "rollout": {"response_format": "syn"},
        "synthesis": {"mode": "off"},
        "optim": {"batch_size": 4, "max_steps": 1},
        "sft": {"enabled": True, "steps": 70 if quick else 120, "lr": 3e-3, "batch_size": 8},
        "eval": {"at_end": False},
        "logging": {"tensorboard": False, "plots": False, "gallery": False, "progress": False, "samples_every": 0},
    })
    trainer = Trainer(cfg, root / "run")
    try:
        trainer.setup()
    finally:
        trainer.close()
    return root / "run" / "sft"
