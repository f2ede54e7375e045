"""A synthesizer plugin for the worker-isolation tests, loaded by a server through its ``plugins:`` key.

``rng_probe`` draws the procedural background, and around it does what a test needs to see from the
outside of a worker process:

* it writes one JSON line per job to ``log_dir`` (its pid, its thread, and ``random.random()`` drawn
  before anything else: what the global generator gave this job);
* ``reseed: true`` reseeds every global generator to 9 after drawing, as BEN2 does on each call;
* ``fail: true`` raises (a failed job with a known message);
* ``hold_file: PATH`` waits for that file to exist (at most ``hold_s`` seconds) before it returns,
  checking the job's deadline unless ``ignore_deadline: true`` (a plugin that ignores it hangs its worker).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from syngrpo.hookspecs import hookimpl
from syngrpo.synthesis.pipeline import check_deadline

NAME = "rng_probe"


class RngProbe:
    def __init__(self, *, log_dir: str, device: str = "cpu") -> None:
        from syngrpo_procedural.background import ProceduralSynthesizer

        self.inner = ProceduralSynthesizer(device=device)
        self.log_dir = Path(log_dir)
        self.max_batch_size = 1

    def synthesize(self, requests: list[Any]) -> list[Any]:
        out = []
        for req in requests:
            opts = dict(req.options)
            drawn = random.random()
            if opts.pop("reseed", False):
                import numpy as np

                random.seed(9)
                np.random.seed(9)
            if opts.pop("fail", False):
                raise RuntimeError(f"asked to fail ({req.description})")
            hold = opts.pop("hold_file", None)
            hold_s = float(opts.pop("hold_s", 30.0))
            ignore = bool(opts.pop("ignore_deadline", False))
            entry = {"pid": os.getpid(), "thread": threading.get_ident(), "drawn": drawn,
                     "description": req.description, "t": time.time()}
            (self.log_dir / f"{os.getpid()}-{time.monotonic_ns()}.json").write_text(json.dumps(entry))
            if hold:
                deadline = time.monotonic() + hold_s
                while not Path(hold).exists() and time.monotonic() < deadline:
                    if not ignore:
                        check_deadline()
                    time.sleep(0.02)
            req.options = opts
            out.append(self.inner.draw(req))
        return out


def read_log(log_dir: Path) -> list[dict]:
    """Every job's entry, oldest first."""
    entries = [json.loads(p.read_text()) for p in Path(log_dir).glob("*.json")]
    return sorted(entries, key=lambda e: e["t"])


@hookimpl
def register_synthesizers(register):
    register(NAME, lambda **options: RngProbe(**options), description="worker-isolation probe (tests)")
