"""The data server stops cleanly even when its stop lands just as a worker's call returns.

On Python < 3.12, ``asyncio.wait_for`` returned the result instead of raising when a task was
cancelled after the awaited future had completed but before the task resumed.  A worker that
missed its cancellation that way went back to waiting for jobs, and ``JobService.stop`` (the
app's cleanup) waited for it forever: the hang seen, under CPU load only, in the teardown of
``test_the_queue_limit_holds_under_concurrent_submissions``.  These tests place the cancellation
in that window on purpose, step by step, so they do not depend on the machine's load.  (On
Python >= 3.12 ``wait_for`` no longer loses it; the tests still hold there.)
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from syngrpo.synthesis.server.calls import call_in_thread
from syngrpo.synthesis.server.validation import SubmissionBody
from syngrpo.synthesis.server.workers import JobService

from .support import job_body, wait_until


def _wait_for_thread_to_end(name: str, timeout: float = 10.0) -> None:
    """Block (the loop too, on purpose) until no thread called ``name`` runs: its outcome is posted."""
    deadline = time.monotonic() + timeout
    while any(t.name == name for t in threading.enumerate()):
        assert time.monotonic() < deadline, f"thread {name} still running"
        time.sleep(0.002)


async def test_a_call_cancelled_just_as_its_thread_returns_raises_cancelled_error():
    cancelled_in_window = 0
    for steps in range(5):  # loop iterations between the posted outcome and the cancel
        task = asyncio.create_task(call_in_thread(lambda: "result", timeout=30, name=f"call-{steps}"))
        await asyncio.sleep(0)  # the thread starts
        _wait_for_thread_to_end(f"call-{steps}")
        for _ in range(steps):
            await asyncio.sleep(0)
        if task.done():
            assert task.result() == "result"
            continue
        cancelled_in_window += 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # a cancellation is never traded for the call's result
    assert cancelled_in_window >= 2  # the window was hit, not only the trivial cases


async def test_the_service_stops_when_the_stop_lands_as_a_call_returns(config_for, registry, control):
    for steps in range(4):
        service = JobService(config_for(synthesizer="controlled", job_timeout_s=30), registry)
        await service.start()
        control.gate.clear()
        control.calls.clear()
        body = SubmissionBody.model_validate(job_body(f"stop-{steps}"), strict=False)
        job, _ = await service.submit(body)
        await wait_until(lambda: len(control.calls) == 1)
        control.gate.set()
        _wait_for_thread_to_end(f"{service.workers[0].name}-synth")
        for _ in range(steps):
            await asyncio.sleep(0)
        stopping = asyncio.create_task(service.stop())
        done, _ = await asyncio.wait({stopping}, timeout=15)
        if not done:  # hung forever before the fix; end it so the failure does not hang too
            stopping.cancel()
            await asyncio.wait({stopping}, timeout=5)
        assert done, f"the service did not stop within 15 s (cancelled {steps} loop steps after the call returned)"
        stopping.result()
        assert all(w.task is not None and w.task.done() for w in service.workers)
