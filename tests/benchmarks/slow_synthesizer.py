"""A synthesizer plugin for the Table 5 benchmark: the procedural image, then a fixed device time.

The paper's synthesizer (SDXL + ControlNet on the data server's own GPUs) takes
about as long per batch as a training step.  On a CPU machine the server's
"device" is its own core: ``bench_slow`` draws the procedural background, then
keeps computing (matrix products, which release the GIL as a GPU kernel would)
until ``min_seconds`` have passed for the job.  ``busy: false`` sleeps instead.

Registered through the data server's ``plugins:`` key (``plugins:
[benchmarks.slow_synthesizer]`` with ``tests/`` on ``PYTHONPATH``), the same door
a third-party plugin uses.  Job option ``min_seconds`` overrides the default,
so each trainer can ask for a time matched to its own step.
"""

from __future__ import annotations

import time
from typing import Any

from syngrpo.hookspecs import hookimpl

NAME = "bench_slow"


class SlowSynthesizer:
    """``procedural`` plus a floor on each job's time (see the module doc)."""

    def __init__(self, *, min_seconds: float = 0.1, busy: bool = True, max_batch_size: int = 16,
                 device: str = "cpu", **procedural: Any) -> None:
        from syngrpo_procedural.background import ProceduralSynthesizer

        self.inner = ProceduralSynthesizer(device=device, **procedural)
        self.min_seconds = float(min_seconds)
        self.busy = bool(busy)
        self.max_batch_size = int(max_batch_size)
        self.device = device
        self.calls = 0

    def synthesize(self, requests: list[Any]) -> list[Any]:
        out = []
        for req in requests:
            t0 = time.perf_counter()
            opts = dict(req.options)
            seconds = float(opts.pop("min_seconds", self.min_seconds))
            req.options = opts
            out.append(self.inner.draw(req))
            self._occupy(t0 + seconds)
            self.calls += 1
        return out

    def _occupy(self, deadline: float) -> None:
        if not self.busy:
            time.sleep(max(0.0, deadline - time.perf_counter()))
            return
        import numpy as np

        a = np.random.default_rng(0).standard_normal((160, 160))
        while time.perf_counter() < deadline:
            a = np.tanh(a @ a.T * 1e-2)  # ~1 ms of BLAS with the GIL released


@hookimpl
def register_synthesizers(register):
    register(NAME, lambda **options: SlowSynthesizer(**options),
             description="procedural background plus a fixed device time per job (benchmarks)")
