"""The ``ray`` backend (issue 28 items 1 and 4) on a real local Ray cluster on 127.0.0.1 with 2 CPUs, the
procedural synthesizer, a real ``syngrpo serve --backend ray`` process and the ``ray`` transport.

* the same seeds give the same bytes as the HTTP server (the local backend);
* a replica killed mid-job loses nothing and runs nothing twice to completion: its job goes back to the queue
  and is done once, by a fresh replica;
* the pool scales up under a bounded burst and back down when the queue is empty;
* the coordinator's HTTP front serves the same API and the live page, behind its token.

The cluster's head runs on 127.0.0.1 only.  Ray rewrites a loopback address to the machine's outward one
unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before it is imported; the plugin sets it for a loopback
address, so neither the servers nor this process are given it here (as a user who types ``127.0.0.1:6379``
would not): the servers start with an environment without it, and this process imports Ray only through the
plugin.

Skips when Ray is not installed (extra ``ray``).  About a minute on two shared cores (the cluster starts once).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from syngrpo.synthesis.server.spawn import start_server_subprocess
from syngrpo.testing import process_alive

from .probe_plugin import read_log
from .support import job_body, make_job

if importlib.util.find_spec("ray") is None:  # not importorskip: importing Ray here would decide its loopback rule
    pytest.skip("Ray is not installed (extra 'ray': pip install 'syngrpo[ray]')", allow_module_level=True)

PLUGIN = Path(__file__).with_name("probe_plugin.py")
TOKEN = "ray-front-token-1"
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _user_env() -> dict[str, str]:
    """This process's environment without Ray's loopback switch: what a user's shell has."""
    return {k: v for k, v in os.environ.items() if k != LOOPBACK_SWITCH}


@pytest.fixture(scope="module")
def cluster():
    from syngrpo_ray.cluster import LocalCluster

    c = LocalCluster(num_cpus=2)
    c.start()
    yield c
    import ray

    ray.shutdown()
    c.stop()


def _request(url: str, body: dict | None = None, token: str | None = TOKEN) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(step)


def _final(url: str, job_id: str, timeout: float = 90.0) -> dict:
    return _wait(lambda: (j := _request(f"{url}/v1/jobs/{job_id}")[1])["state"] in ("done", "failed", "cancelled")
                 and j, timeout, f"job {job_id} final")


def _ray_server(tmp_path, cluster, name: str, **options):
    log_dir = tmp_path / f"probe-{name}"
    log_dir.mkdir()
    opts = {"address": cluster.address, "name": name, "replica_num_cpus": 0.5, **options}
    overrides = ["backend=ray", f"backend_options={json.dumps(opts)}", f"plugins=[{PLUGIN}]", "synthesizer=rng_probe",
                 f"synthesizer_options={{log_dir: {log_dir}}}"]
    handle = start_server_subprocess(data_dir=tmp_path / f"store-{name}", overrides=overrides, token=TOKEN,
                                     log_path=tmp_path / f"{name}.log", startup_timeout_s=120, wait_ready=True,
                                     env=_user_env())
    return handle, log_dir


def _health(url: str) -> dict:
    return _request(url + "/healthz")[1]


def test_same_seeds_give_the_same_bytes_as_the_http_server_and_the_transport_reaches_them(tmp_path, cluster):
    from syngrpo_ray.transport import RayTransport

    seeds = (0, 7, 123)
    local = start_server_subprocess(data_dir=tmp_path / "local")
    try:
        expected = []
        for i, seed in enumerate(seeds):
            status, job = _request(local.url + "/v1/jobs", job_body(f"k{i}", seed=seed), token=None)
            assert status == 201
            assert _final(local.url, job["id"])["state"] == "done"
            expected.append(base64.b64decode(_request(f"{local.url}/v1/jobs/{job['id']}/result", token=None)[1]["image"]))
    finally:
        local.stop()

    log_dir = tmp_path / "plain-log"
    log_dir.mkdir()
    handle = start_server_subprocess(
        data_dir=tmp_path / "ray-store", token=TOKEN, log_path=tmp_path / "plain.log", startup_timeout_s=120,
        wait_ready=True, env=_user_env(),
        overrides=["backend=ray", "backend_options=" + json.dumps({"address": cluster.address, "name": "plain",
                                                                   "replica_num_cpus": 0.5})])
    try:
        got = []
        for i, seed in enumerate(seeds):
            status, job = _request(handle.url + "/v1/jobs", job_body(f"k{i}", seed=seed))
            assert status == 201, job
            assert _final(handle.url, job["id"])["state"] == "done"
            got.append(base64.b64decode(_request(f"{handle.url}/v1/jobs/{job['id']}/result")[1]["image"]))
        assert got == expected
        # the same API rules: an idempotent retry, a conflicting key, the token
        assert _request(handle.url + "/v1/jobs", job_body("k0", seed=0))[0] == 200
        assert _request(handle.url + "/v1/jobs", job_body("k0", seed=1))[0] == 409
        assert _request(handle.url + "/v1/jobs", job_body("k9"), token=None)[0] == 401
        assert _request(handle.url + "/v1/overview", token=None)[0] == 401
        overview = _request(handle.url + "/v1/overview")[1]
        assert overview["server"]["backend"] == "ray" and overview["jobs"]["done_total"] == 3
        assert {w["isolation"] for w in overview["workers"]} == {"ray"}

        transport = RayTransport(address=cluster.address, name="plain", call_timeout_s=30)
        assert os.environ.get(LOOPBACK_SWITCH) == "0"  # set by the transport, before it imported Ray
        try:
            for i, seed in enumerate(seeds):
                transport.submit(make_job(f"t{i}", seed=seed))
            results = sorted(transport.wait([f"t{i}" for i in range(3)], 90), key=lambda r: r.key)
            assert [r.state for r in results] == ["done"] * 3
            assert [r.image_png for r in results] == expected
            with pytest.raises(Exception, match="key_conflict"):
                transport.submit(make_job("t0", seed=99))
            transport.delete(results)
            _wait(lambda: _request(f"{handle.url}/v1/jobs/{results[0].job_id}")[0] == 410, 30, "deleted by the transport")
        finally:
            transport.close()
    finally:
        handle.stop()


def test_a_replica_killed_mid_job_loses_nothing_and_runs_nothing_twice(tmp_path, cluster):
    handle, log_dir = _ray_server(tmp_path, cluster, "kill", min_replicas=1, max_replicas=1)
    hold = tmp_path / "release"
    try:
        status, job = _request(handle.url + "/v1/jobs", job_body("victim", options={"hold_file": str(hold)}))
        assert status == 201
        _wait(lambda: len(read_log(log_dir)) == 1, 60, "the job started on a replica")
        pid = read_log(log_dir)[0]["pid"]
        os.kill(pid, signal.SIGKILL)  # the replica's process, mid-job
        _wait(lambda: not process_alive(pid), 10, "the replica died")
        hold.touch()
        final = _final(handle.url, job["id"])
        assert final["state"] == "done" and final["attempts"] == 2, final
        replica = _health(handle.url)["workers"][0]
        assert replica["lost_calls"] == 1 and replica["restarts"] == 1 and replica["pid"] != pid
        keys = [j["key"] for j in _request(handle.url + "/v1/jobs")[1]["jobs"]]
        assert keys == ["victim"]  # one job for the key, done once
        assert len({e["pid"] for e in read_log(log_dir)}) == 2
    finally:
        hold.touch()
        handle.stop()


def test_the_pool_scales_up_under_a_burst_and_back_down_when_idle(tmp_path, cluster):
    handle, log_dir = _ray_server(tmp_path, cluster, "scale", min_replicas=1, max_replicas=3,
                                  target_jobs_per_replica=2, downscale_delay_s=2, scale_interval_s=0.2)
    hold = tmp_path / "release"
    try:
        assert len(_health(handle.url)["workers"]) == 1
        ids = []
        for i in range(8):  # a bounded burst: 8 jobs held until released, so the backlog stays
            status, job = _request(handle.url + "/v1/jobs", job_body(f"b{i}", seed=i, options={"hold_file": str(hold)}))
            assert status == 201
            ids.append(job["id"])
        _wait(lambda: sum(w["state"] in ("ready", "busy") for w in _health(handle.url)["workers"]) == 3, 90,
              "three replicas up")
        hold.touch()
        finals = [_final(handle.url, i) for i in ids]
        assert all(f["state"] == "done" and f["attempts"] == 1 for f in finals)
        assert len({e["pid"] for e in read_log(log_dir)}) >= 2  # the burst ran on more than one replica
        _wait(lambda: len(_health(handle.url)["workers"]) == 1, 60, "back down to min_replicas")
        coordinator_events = _pool_events(cluster, "scale")
        assert [e["event"] for e in coordinator_events][:1] == ["start"]
        assert "up" in [e["event"] for e in coordinator_events] and coordinator_events[-1]["event"] == "down"
        # and the one left still works
        _, job = _request(handle.url + "/v1/jobs", job_body("after", seed=42))
        assert _final(handle.url, job["id"])["state"] == "done"
    finally:
        hold.touch()
        handle.stop()


def _pool_events(cluster, name: str) -> list[dict]:
    from syngrpo_ray.address import keep_loopback

    keep_loopback(cluster.address)
    import ray

    if not ray.is_initialized():
        ray.init(address=cluster.address, namespace="syngrpo", configure_logging=False)
    actor = ray.get_actor(name, namespace="syngrpo")
    return ray.get(actor.health.remote(), timeout=30)["pool"]["events"]
