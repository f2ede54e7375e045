"""Fair shares of the workers between clients: who runs next when several clients wait.

First come, first served let one client's work delay everyone else's: eight 18.7-second jobs of
one client made another's job wait 133 s (issue 24, item 3).  Instead, the next job is the oldest
queued job of the client that has used the workers least lately (least attained service, as
Linux's CFS picks the task with the least virtual run time):

- a client's usage is its **worker-seconds**: the run time of its finished jobs, each halved
  every ``fair_share_half_life_s`` (300 s) so that old work is forgiven, plus the time its jobs
  running now have run so far;
- among the clients with queued jobs, the one with the least usage goes first; a tie goes to
  the oldest job.

So a client that sends one job while another has hundreds queued waits for the jobs running now
and then runs, whatever the length of the other's queue; two clients that both keep the queue
full get about half the workers each.  A single client sees first come, first served, as before.
Who a client is: :func:`syngrpo.synthesis.server.admission.client_of`.

The shares are kept in memory: after a restart every client starts even again (the queue itself
is on disk and loses nothing).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class FairShare:
    """Decayed worker-seconds per client; :meth:`usage` is what the scheduler orders clients by."""

    def __init__(self, half_life_s: float, clock: Callable[[], float] = time.time) -> None:
        self.half_life_s = half_life_s
        self.clock = clock
        self._used: dict[str, tuple[float, float]] = {}  # client -> (worker-seconds, when they were valued)

    def _decayed(self, client: str, now: float) -> float:
        value, at = self._used.get(client, (0.0, now))
        return value * math.pow(0.5, max(0.0, now - at) / self.half_life_s)

    def charge(self, client: str, seconds: float) -> None:
        """Add ``seconds`` of worker time to ``client`` (a finished job's run time, or its share of a batch)."""
        if seconds <= 0 or not math.isfinite(seconds):
            return
        now = self.clock()
        self._used[client] = (self._decayed(client, now) + seconds, now)
        if len(self._used) > 10_000:  # forget the clients whose usage has decayed to nothing
            self._used = {c: v for c, v in self._used.items() if self._decayed(c, now) > 1e-3}

    def usage(self, client: str) -> float:
        """``client``'s finished worker-seconds, decayed to now (its running jobs are the store's to add)."""
        return self._decayed(client, self.clock())

    def snapshot(self) -> dict[str, float]:
        now = self.clock()
        return {c: self._decayed(c, now) for c in self._used}
