"""A full disk under the job store: 507 with a reason, ``/healthz`` degraded, no leftovers, and a worker
that carries on when space returns.

Two ways: a real 4 MiB tmpfs filled up under a real server subprocess (where mounting is allowed:
root, as on this machine; skipped elsewhere), and a full disk injected at the store's boundary:
``os.fsync`` of the store's file writes and the SQLite commits of ``JobStore`` raise what a full disk
raises (``OSError(ENOSPC)``, ``sqlite3.OperationalError("database or disk is full")``) while
``disk.full`` is set, which also reaches the worker's own database writes at a chosen moment.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import time

import pytest

from syngrpo.synthesis.server import files as files_module
from syngrpo.synthesis.server.app import create_app
from syngrpo.synthesis.server.store import JobStore

from .support import job_body, wait_for_state, wait_until
from .test_api import prometheus


class Disk:
    full = False


@pytest.fixture
def disk(monkeypatch):
    d = Disk()
    real_fsync = files_module.os.fsync

    def fsync(fd):
        if d.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(files_module.os, "fsync", fsync)
    for name in ("insert", "finish", "claim"):
        real = getattr(JobStore, name)

        def wrapped(self, *args, _real=real, **kwargs):
            if d.full:
                raise sqlite3.OperationalError("database or disk is full")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(JobStore, name, wrapped)
    return d


async def test_a_full_disk_answers_507_with_a_reason_leaves_nothing_behind_and_recovers(aiohttp_client, config_for,
                                                                                         disk, tmp_path):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    disk.full = True
    resp = await client.post("/v1/jobs", json=job_body("full-1"))
    assert resp.status == 507
    err = (await resp.json())["error"]
    assert err["code"] == "insufficient_storage" and "disk is full" in err["message"]
    health = await client.get("/healthz")
    body = await health.json()
    assert health.status == 200 and body["status"] == "degraded" and "No space left" in body["reason"]
    jobs_dir = cfg.data_dir / "jobs"
    assert list(jobs_dir.iterdir()) == []  # no orphan job folder
    assert list(cfg.data_dir.rglob("*.tmp")) == []  # no half-written file
    disk.full = False
    resp = await client.post("/v1/jobs", json=job_body("after-space"))
    assert resp.status == 201
    assert (await wait_for_state(client, (await resp.json())["id"]))["state"] == "done"
    assert (await (await client.get("/healthz")).json())["status"] == "ok"
    assert "syngrpo_submissions_storage_refused_total 1" in await (await client.get("/metrics")).text()


async def test_a_job_whose_result_hits_a_full_disk_is_retried_when_space_returns_not_failed(aiohttp_client,
                                                                                             config_for, registry,
                                                                                             control, disk):
    """Issue 24 item 10: the result write and the final row fail on a full disk; the job goes back to the
    queue (its attempt not counted), the worker waits, and once space returns the job runs again and is done."""
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled"), registry=registry))
    control.gate.clear()
    resp = await client.post("/v1/jobs", json=job_body("commit-later"))
    job_id = (await resp.json())["id"]
    await wait_until(lambda: len(control.calls) == 1)
    disk.full = True  # the job's result files and its final row cannot be written
    control.gate.set()
    async def degraded() -> bool:
        return (await (await client.get("/healthz")).json())["status"] == "degraded"

    for _ in range(200):
        if await degraded():
            break
        await asyncio.sleep(0.02)
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "degraded" and body["workers"][0]["state"] != "broken"
    disk.full = False  # space returns: the same worker runs the job again and takes new ones
    job = await wait_for_state(client, job_id, timeout=30)
    assert job["state"] == "done" and job["error"] is None, job  # retried, not failed for good
    assert job["attempts"] == 1  # the run the full disk spoiled does not count against max_attempts
    assert len(control.calls) == 2
    assert prometheus(await (await client.get("/metrics")).text())["syngrpo_jobs_disk_retries_total"] == 1
    nxt = await client.post("/v1/jobs", json=job_body("next"))
    assert (await wait_for_state(client, (await nxt.json())["id"]))["state"] == "done"
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "ok" and body["workers"][0]["state"] in ("ready", "busy")


# ----------------------------------------------------------------------------- a real full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs (needs the right to mount: root, as on this machine; skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path) -> None:
    """Write zeros into ``path`` until the disk says it is full."""
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def call(url, body=None):
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_final(url: str, job_id: str) -> str:
    deadline = time.monotonic() + 20
    while (state := call(f"{url}/v1/jobs/{job_id}")[1]["state"]) not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return state


def test_a_real_full_tmpfs_gives_507_then_recovers_when_space_returns(tiny_disk):
    """The disk fills past the server's own floor (another process wrote it): 507, never a crash."""
    from syngrpo.synthesis.server.spawn import start_server_subprocess

    data = tiny_disk / "store"
    # no free-space floor: this is about a disk that fills anyway (the floor's own test is below)
    with start_server_subprocess(data_dir=data, log_path=tiny_disk.parent / "server.log",
                                 overrides=["min_free_bytes=0"]) as server:
        status, before = call(server.url + "/v1/jobs", job_body("before"))
        assert status == 201
        wait_final(server.url, before["id"])  # its files are written: nothing of it is in flight while the disk fills
        filler = tiny_disk / "filler"
        _fill(filler)
        status, body = call(server.url + "/v1/jobs", job_body("while-full"))
        assert status == 507 and body["error"]["code"] == "insufficient_storage"
        status, health = call(server.url + "/healthz")
        assert status == 200 and health["status"] == "degraded" and "No space left" in health["reason"]
        assert list(data.rglob("*.tmp")) == []
        filler.unlink()  # space returns
        status, body = call(server.url + "/v1/jobs", job_body("after"))
        assert status == 201
        assert wait_final(server.url, body["id"]) == "done"
        assert call(server.url + "/healthz")[1]["status"] == "ok"
        assert list(data.rglob("*.tmp")) == []
        ids = {p.name for p in (data / "jobs").iterdir()}
        assert len(ids) == 2  # "before" and "after": the refused job left no folder


def test_a_free_space_floor_refuses_new_jobs_with_429_while_the_real_disk_still_has_room(tiny_disk):
    """``min_free_bytes`` on a real 4 MiB filesystem: refused with 429 disk_low before ENOSPC, and taken again
    when space returns."""
    import os

    from syngrpo.synthesis.server.spawn import start_server_subprocess

    data = tiny_disk / "store"
    floor = 1024 * 1024
    with start_server_subprocess(data_dir=data, log_path=tiny_disk.parent / "server.log",
                                 overrides=[f"min_free_bytes={floor}"]) as server:
        status, before = call(server.url + "/v1/jobs", job_body("before"))
        assert status == 201
        wait_final(server.url, before["id"])
        filler = tiny_disk / "filler"
        free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
        filler.write_bytes(b"\0" * (free - floor // 2))  # half the floor left: the disk is not full
        status, body = call(server.url + "/v1/jobs", job_body("while-low"))
        assert status == 429 and body["error"]["code"] == "disk_low", body
        left = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
        assert left > floor // 4  # refused with room to spare, not by a failed write
        status, health = call(server.url + "/healthz")
        assert status == 200 and health["status"] == "degraded" and "min_free_bytes" in health["reason"]
        filler.unlink()
        status, body = call(server.url + "/v1/jobs", job_body("after"))
        assert status == 201
        assert wait_final(server.url, body["id"]) == "done"
        assert {p.name for p in (data / "jobs").iterdir()} == {before["id"], body["id"]}
