"""Kill the real ``syngrpo serve`` process with SIGKILL, restart it: no acknowledged job is lost."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from syngrpo.synthesis.server.spawn import start_server_subprocess

from .support import job_body

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL semantics")

SLOW_PLUGIN = textwrap.dedent('''
    """A synthesizer that takes its time, so jobs are queued and running when the server is killed."""
    import time

    from PIL import Image

    from syngrpo.hookspecs import hookimpl


    class Slow:
        max_batch_size = 1

        def __init__(self, delay_s=0.3, device="cpu"):
            self.delay_s = delay_s

        def synthesize(self, requests):
            time.sleep(self.delay_s)
            return [Image.new("RGB", r.image.size, (seed_colour(r.seed), 90, 30)) for r in requests]


    def seed_colour(seed):
        return (seed * 37) % 256


    @hookimpl
    def register_synthesizers(register):
        register("slow", Slow)
''')


def call(url: str, body: dict | None = None) -> tuple[int, dict | bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def states(url: str, ids: list[str]) -> dict[str, str]:
    status, body = call(f"{url}/v1/jobs?ids={','.join(ids)}")
    assert status == 200
    return {j["id"]: j["state"] for j in body["jobs"]}


def wait(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_and_restart_loses_no_acknowledged_job(tmp_path: Path):
    plugdir = tmp_path / "plug"
    plugdir.mkdir()
    (plugdir / "slow_synth.py").write_text(SLOW_PLUGIN)
    config = tmp_path / "server.yaml"
    config.write_text("synthesizer: slow\nsynthesizer_options: {delay_s: 0.3}\nplugins: [slow_synth]\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugdir), os.environ.get("PYTHONPATH", "")]))
    data_dir = tmp_path / "data"

    server = start_server_subprocess(config, port=0, data_dir=data_dir, env=env)
    try:
        acked = []
        for i in range(6):
            status, job = call(f"{server.url}/v1/jobs", job_body(f"kill-{i}", seed=i))
            assert status == 201
            acked.append(job["id"])
        wait(lambda: "done" in states(server.url, acked).values())
        before = states(server.url, acked)
        done_before = [i for i, s in before.items() if s == "done"]
        _, first_result = call(f"{server.url}/v1/jobs/{done_before[0]}/result.png")
        assert set(before.values()) >= {"done", "queued"}
        server.kill()  # SIGKILL: no cleanup, a job is mid-synthesis
        assert server.process.returncode == -9
    finally:
        server.kill()

    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        on_disk = dict(db.execute("SELECT id, state FROM jobs").fetchall())
    assert set(on_disk) == set(acked)
    assert "running" in on_disk.values()  # the one being synthesized when the process died

    restarted = start_server_subprocess(config, port=0, data_dir=data_dir, env=env,
                                        overrides=["synthesizer_options.delay_s=0.01"])
    try:
        wait(lambda: set(states(restarted.url, acked).values()) == {"done"})
        _, same_result = call(f"{restarted.url}/v1/jobs/{done_before[0]}/result.png")
        assert same_result == first_result  # finished results are still served, unchanged
        status, again = call(f"{restarted.url}/v1/jobs", job_body("kill-0", seed=0))
        assert status == 200 and again["id"] == acked[0]  # the idempotency key survived too
        killed_mid_run = [i for i, s in on_disk.items() if s == "running"]
        _, job = call(f"{restarted.url}/v1/jobs/{killed_mid_run[0]}")
        assert job["attempts"] == 2  # re-queued and run again
        assert restarted.stop() == 0  # SIGTERM is a clean exit
    finally:
        restarted.kill()
