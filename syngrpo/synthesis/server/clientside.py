"""Pieces both transports share: an asyncio loop in a background thread and the result buffer.

The trainer is synchronous; transports run their asynchronous work (HTTP calls, the job service
of the ``inprocess`` transport) on a private event loop in a daemon thread and hand finished
jobs over through a :class:`ResultBuffer`, so ``poll()`` only takes a lock and never waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from syngrpo.synthesis.transport import SynthesisResult

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self  # typing.Self needs Python 3.11

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "syngrpo-transport") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result here (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Start ``coro`` on the loop without waiting (returns a concurrent future)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return

        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                self.call(_cancel_rest(), timeout)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class ResultBuffer:
    """Jobs submitted and not yet handed to the trainer; each final result is handed over once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, Any] = {}
        self._ready: OrderedDict[str, SynthesisResult] = OrderedDict()
        self.counts = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0}

    def add(self, key: str, info: Any = None) -> None:
        """Track ``key`` (again: only updates its info)."""
        with self._cond:
            if key not in self._pending:
                self.counts["submitted"] += 1
                self._pending[key] = info
            elif info is not None:
                self._pending[key] = info

    def is_pending(self, key: str) -> bool:
        with self._cond:
            return key in self._pending

    def discard(self, key: str) -> None:
        """Forget a key whose submission was refused."""
        with self._cond:
            if key in self._pending:
                del self._pending[key]
                self.counts["submitted"] -= 1
            self._ready.pop(key, None)

    def info(self, key: str) -> Any:
        with self._cond:
            return self._pending.get(key)

    def pending_items(self) -> list[tuple[str, Any]]:
        """Submitted jobs whose result has not arrived yet."""
        with self._cond:
            return [(k, v) for k, v in self._pending.items() if k not in self._ready]

    def complete(self, result: SynthesisResult) -> bool:
        """Record a final result; ignored (False) for a key not pending or already complete."""
        with self._cond:
            if result.key not in self._pending or result.key in self._ready:
                return False
            self._ready[result.key] = result
            self.counts[result.state] = self.counts.get(result.state, 0) + 1
            self._cond.notify_all()
            return True

    def poll(self) -> list[SynthesisResult]:
        with self._cond:
            out = list(self._ready.values())
            for r in out:
                self._pending.pop(r.key, None)
            self._ready.clear()
            return out

    def wait(self, keys: Sequence[str], timeout: float) -> list[SynthesisResult]:
        """Results of ``keys`` (those of them that are ours), waiting until all are final or ``timeout``."""
        import time

        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            wanted = [k for k in dict.fromkeys(keys) if k in self._pending]
            while True:
                if all(k in self._ready for k in wanted):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            out = []
            for k in wanted:
                r = self._ready.pop(k, None)
                if r is not None:
                    self._pending.pop(k, None)
                    out.append(r)
            return out

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)


class BufferedTransport:
    """What every transport does the same way: finished jobs wait in a :class:`ResultBuffer`.

    A subclass sets ``self._buffer`` and completes results into it from its loop
    thread; ``poll``, ``wait`` and ``pending`` of :class:`syngrpo.synthesis.transport.Transport`
    then only read the buffer.
    """

    _buffer: ResultBuffer

    def poll(self) -> list[SynthesisResult]:
        return self._buffer.poll()

    def wait(self, keys: Sequence[str], timeout: float) -> list[SynthesisResult]:
        return self._buffer.wait(keys, timeout)

    def pending(self) -> int:
        return self._buffer.pending()

    def stats(self) -> dict[str, Any]:
        """Client-side counts (submitted, done, failed, cancelled) and ``pending``; subclasses add theirs."""
        out: dict[str, Any] = dict(self._buffer.counts)
        out["pending"] = self._buffer.pending()
        return out

    def close(self) -> None:  # pragma: no cover - every transport overrides it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
