"""A native crash inside a synthesizer (a C++ ``std::terminate``: ``terminate called without an active
exception``, then SIGABRT) takes the whole server process down with it, so no Python handler can fail the job.
The server log then ended with that line and the job was re-queued, crashed the server again, and finally failed
as "the server stopped while running this job 3 times", without the cause (issue #25). Now the supervisor
records how the process ended and the restarted server puts it in the job's error and in its log."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from syngrpo.synthesis.server.spawn import start_supervised_server

from .support import job_body

ABORTING = '''
import os
import sys

from syngrpo.hookspecs import hookimpl


class Aborting:
    def synthesize(self, requests):
        sys.stderr.write("terminate called without an active exception\\n")
        sys.stderr.flush()
        os.abort()


@hookimpl
def register_synthesizers(register):
    register("aborting", lambda **options: Aborting())
'''


def _json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_job_whose_synthesizer_aborts_the_process_fails_with_the_signal_and_the_last_log_line(tmp_path, isolation):
    """Under ``worker_isolation: thread`` the abort takes the server down and the supervisor's record names the
    cause; under ``process`` (the default) only the worker's process dies, the server names the signal in the
    job's error and the worker's last words stay in the server's log."""
    plugin = tmp_path / "aborting_plugin.py"
    plugin.write_text(ABORTING, encoding="utf-8")
    with start_supervised_server(data_dir=tmp_path / "store", check_interval_s=0.1, backoff_s=0.2,
                                 overrides=[f"plugins=[{plugin}]", "synthesizer=aborting", "max_attempts=1",
                                            f"worker_isolation={isolation}"]) as server:
        job = _json(server.url + "/v1/jobs", job_body("crash-1"))
        deadline = time.monotonic() + 120
        while True:
            try:
                state = _json(f"{server.url}/v1/jobs/{job['id']}")
            except OSError:  # the server is down between the crash and its restart
                state = {"state": "running"}
            if state["state"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.2)
        events = " ".join(server.drain_events())
        log = server.log_path.read_text(errors="replace")
    assert state["state"] == "failed", state
    assert "SIGABRT" in state["error"], state
    if isolation == "thread":  # the whole server died: the supervisor's record carries the last log line
        assert "terminate called without an active exception" in state["error"], state
        assert "SIGABRT" in events and "terminate called" in events, events
    else:  # the server lived on: no restart, and the worker's last words are in its log
        assert "terminate called without an active exception" in log and "SIGABRT" in log, log[-3000:]
