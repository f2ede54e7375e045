"""Ctrl-C during training: stop at a step boundary with a checkpoint, never lose more than the step in flight.

A step stopped half-way leaves the optimizer, the data pool and the sampling streams between two states, so
no checkpoint can be written from there. The first SIGINT therefore only asks the loop to stop once the step
in flight has finished; the loop then writes that step's checkpoint and returns, and ``syngrpo train
--resume RUN`` continues from it. A second SIGINT stops at once (a :class:`KeyboardInterrupt`): the
command then says how far back ``--resume`` goes, and how to write checkpoints more often
(:func:`resume_hint`).

The signal reaches the data server a run spawned too when it comes from a terminal (the whole foreground
process group gets it); that server runs in a session of its own (:mod:`syngrpo.synthesis.server.spawn`), so
it keeps serving until the trainer stops it, and it is not restarted on the way down.

Under ``torchrun`` the handler is not installed: each rank would see the signal between different
collectives; the launcher's own handling applies (checkpoint often there: ``logging.save_every``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from syngrpo.rundir.checkpoint import latest_checkpoint


class StopAtStepEnd:
    """A SIGINT handler for the step loop: the first Ctrl-C sets :attr:`requested`, the second raises.

    ``say`` tells the user what happens; ``where()`` returns ``(the step that will be checkpointed: the one in
    flight, or the last finished one between steps; the latest checkpoint's step or None)`` for that message. Installed only in the main thread (Python's rule) and when ``enabled``.
    """

    def __init__(self, say: Callable[[str], None], where: Callable[[], tuple[int, int | None]], *,
                 enabled: bool = True) -> None:
        self.say = say
        self.where = where
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopAtStepEnd:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        step, saved = self.where()
        back = f"step {saved}" if saved is not None else "nothing (no checkpoint yet)"
        when = f"when step {step} is done" if step else "before the first step"
        self.say(f"Ctrl-C: stopping {when}, then writing its checkpoint; "
                 f"Ctrl-C again stops at once (--resume would then go back to {back})")


def resume_hint(run_dir: str | Path, *, step: int, save_every: int) -> str:
    """What a run stopped by a second Ctrl-C (or one before its first step) can be resumed from, in one
    paragraph: the step ``--resume`` goes back to, the steps lost, how to checkpoint more often."""
    run_dir = Path(run_dir)
    ckpt = latest_checkpoint(run_dir)
    often = (f"checkpoints are written every {save_every} steps; --set logging.save_every=1 writes one after "
             "every step" if save_every else "checkpoints are written only at the end (logging.save_every: 0); "
             "--set logging.save_every=N writes one every N steps")
    where = f"interrupted after step {step}: " if step else "interrupted before the first step finished: "
    if ckpt is None:
        warm = run_dir / "sft"
        reuse = (f"; the warm start is saved: --set model.policy={warm} --set sft.enabled=false starts from it"
                 if (warm / "config.json").is_file() else "")
        return where + f"no checkpoint to resume from yet ({often}){reuse}"
    saved = int(ckpt.name.rsplit("-", 1)[-1])
    lost = f", losing step(s) {saved + 1}..{step}" if step > saved else ""
    return (where + f"`syngrpo train --resume {run_dir}` continues from step {saved}{lost} ({often}); "
            "a single Ctrl-C stops at the end of the step in flight and checkpoints it")
