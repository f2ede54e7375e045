"""The data server keeps a bounded disk: deleting jobs, retention, tombstones, a store budget and a free-space floor.

Every test runs the real application on 127.0.0.1 (``aiohttp_client``) over the real SQLite store and
real files under a temporary ``data_dir``; nothing is mocked.  A "crash" between the two halves of a
deletion is the first half done through the store's own API and the process state thrown away
(the store closed without the second half), then a fresh server on the same directory.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest

from syngrpo.synthesis.server.app import SERVICE, create_app
from syngrpo.synthesis.server.store import JobStore

from .support import b64, job_body, png_bytes, scene, wait_for_state, wait_until
from .test_api import prometheus


def store_files_bytes(data_dir) -> int:
    """Bytes of every job file under ``data_dir/jobs`` (what ``du`` would count, less block rounding);
    files deleted while it counts are not counted."""
    total = 0
    for root, _, files in os.walk(data_dir / "jobs"):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def noisy_body(key: str, seed: int = 0) -> dict:
    """A job whose image is 320x240 of noise (a ~230 KB PNG): its files, not the database, fill a store."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image.paste(scene()[0], (0, 0))  # the labelled shapes where the boxes are
    return job_body(key, image=b64(png_bytes(image)), seed=seed)


async def submit_done(client, key: str, **changes) -> dict:
    resp = await client.post("/v1/jobs", json=job_body(key, **changes))
    assert resp.status == 201, await resp.text()
    job = await wait_for_state(client, (await resp.json())["id"])
    assert job["state"] == "done", job["error"]
    return job


# ----------------------------------------------------------------------------- DELETE /v1/jobs/{id}


async def test_deleting_a_done_job_removes_its_row_and_files_and_deleting_again_answers_the_same(aiohttp_client,
                                                                                                 config_for):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    job = await submit_done(client, "del-1")
    folder = cfg.data_dir / "jobs" / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["input.png", "mask.png", "result.png"]

    resp = await client.delete(f"/v1/jobs/{job['id']}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["id"] == job["id"] and body["key"] == "del-1" and body["state"] == "deleted"
    assert body["reason"] == "client" and body["deleted_at"] > 0
    assert not folder.exists()

    gone = await client.get(f"/v1/jobs/{job['id']}")
    assert gone.status == 410 and (await gone.json())["error"]["code"] == "deleted"
    assert (await client.get(f"/v1/jobs/{job['id']}/result.png")).status == 410
    listing = await (await client.get("/v1/jobs", params={"ids": job["id"]})).json()
    assert listing["jobs"] == []

    again = await client.delete(f"/v1/jobs/{job['id']}")  # idempotent: a lost answer can be asked again
    assert again.status == 200 and (await again.json())["state"] == "deleted"
    unknown = await client.delete("/v1/jobs/" + "0" * 32)
    assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "not_found"
    bad = await client.delete("/v1/jobs/..%2F..%2Fetc")
    assert bad.status in (400, 404)


async def test_deleting_a_queued_job_frees_its_slot_and_a_running_one_is_cancelled_then_deleted(
        aiohttp_client, config_for, registry, control):
    cfg = config_for(synthesizer="controlled", queue_size=1)
    client = await aiohttp_client(create_app(cfg, registry=registry))
    control.gate.clear()
    running = await (await client.post("/v1/jobs", json=job_body("run-1"))).json()
    await wait_until(lambda: len(control.calls) == 1)
    queued = await (await client.post("/v1/jobs", json=job_body("queued-1"))).json()
    assert (await client.post("/v1/jobs", json=job_body("queued-2"))).status == 429  # the queue is full

    resp = await client.delete(f"/v1/jobs/{queued['id']}")
    assert resp.status == 200 and (await resp.json())["state"] == "deleted"
    assert not (cfg.data_dir / "jobs" / queued["id"]).exists()
    assert (await client.post("/v1/jobs", json=job_body("queued-2"))).status == 201  # its slot is free

    resp = await client.delete(f"/v1/jobs/{running['id']}")
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["state"] == "running" and body["cancel_requested"] and body["delete_requested"]
    control.gate.set()  # the call returns: the job is cancelled, its result discarded, then deleted

    folder = cfg.data_dir / "jobs" / running["id"]

    async def gone() -> bool:  # the row goes first (410), its folder right after, off the event loop
        return (await client.get(f"/v1/jobs/{running['id']}")).status == 410 and not folder.exists()

    for _ in range(500):
        if await gone():
            break
        await asyncio.sleep(0.02)
    assert await gone(), folder
    counts = prometheus(await (await client.get("/metrics")).text())
    assert counts["syngrpo_jobs_cancelled_total"] == 2 and counts["syngrpo_jobs_done_total"] <= 1


async def test_delete_needs_the_token_like_every_other_job_route(aiohttp_client, config_for):
    client = await aiohttp_client(create_app(config_for(token="token-1234")))
    auth = {"Authorization": "Bearer token-1234"}
    resp = await client.post("/v1/jobs", json=job_body("tok-del"), headers=auth)
    job_id = (await resp.json())["id"]
    await wait_until(lambda: client.server.app[SERVICE].store.get(job_id).state == "done")
    assert (await client.delete(f"/v1/jobs/{job_id}")).status == 401
    assert (await client.post("/v1/jobs/delete", json={"ids": [job_id]})).status == 401
    assert client.server.app[SERVICE].store.get(job_id) is not None
    assert (await client.delete(f"/v1/jobs/{job_id}", headers=auth)).status == 200


async def test_many_jobs_are_deleted_in_one_request_by_id_or_key(aiohttp_client, config_for):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    jobs = [await submit_done(client, f"many-{i}", seed=i) for i in range(4)]
    resp = await client.post("/v1/jobs/delete", json={"ids": [jobs[0]["id"], jobs[1]["id"], "f" * 32],
                                                       "keys": ["many-2", "never-made"]})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert sorted(body["deleted"]) == sorted(j["id"] for j in jobs[:3])
    assert body["deleting"] == [] and sorted(body["not_found"]) == ["f" * 32, "never-made"]
    left = await (await client.get("/v1/jobs")).json()
    assert [j["key"] for j in left["jobs"]] == ["many-3"]
    assert sorted(p.name for p in (cfg.data_dir / "jobs").iterdir()) == [jobs[3]["id"]]
    bad = await client.post("/v1/jobs/delete", json={"ids": ["x" * 32]})
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_id"
    too_many = await client.post("/v1/jobs/delete", json={"ids": ["a" * 32] * 501})
    assert too_many.status == 422


# ----------------------------------------------------------------------------- idempotency after deletion


async def test_a_deleted_key_sent_again_with_the_same_content_is_a_fresh_job_with_the_same_image(aiohttp_client,
                                                                                                 config_for):
    """A trainer resumed from a checkpoint asks again for jobs it had collected (and deleted) since: it gets
    them back, synthesized again from the same seed; other content under that key is still a conflict."""
    client = await aiohttp_client(create_app(config_for()))
    first = await submit_done(client, "again-1", seed=5)
    image = await (await client.get(f"/v1/jobs/{first['id']}/result.png")).read()
    assert (await client.delete(f"/v1/jobs/{first['id']}")).status == 200

    other = await client.post("/v1/jobs", json=job_body("again-1", seed=6))
    assert other.status == 409 and (await other.json())["error"]["code"] == "key_conflict"
    resp = await client.post("/v1/jobs", json=job_body("again-1", seed=5))
    assert resp.status == 201
    second = await wait_for_state(client, (await resp.json())["id"])
    assert second["id"] != first["id"] and second["state"] == "done"
    assert await (await client.get(f"/v1/jobs/{second['id']}/result.png")).read() == image
    again = await client.post("/v1/jobs", json=job_body("again-1", seed=5))  # and idempotent as before
    assert again.status == 200 and (await again.json())["id"] == second["id"]


async def test_a_tombstone_expires_and_then_the_key_is_free_for_other_content(aiohttp_client, config_for):
    cfg = config_for(tombstone_s=0.2, retention_sweep_s=0.05)
    client = await aiohttp_client(create_app(cfg))
    job = await submit_done(client, "tomb-1")
    await client.delete(f"/v1/jobs/{job['id']}")
    assert (await client.post("/v1/jobs", json=job_body("tomb-1", seed=9))).status == 409
    service = client.server.app[SERVICE]
    await wait_until(lambda: service.store.tombstone(job["id"]) is None, timeout=10)
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 404
    assert (await client.post("/v1/jobs", json=job_body("tomb-1", seed=9))).status == 201


# ----------------------------------------------------------------------------- retention


async def test_finished_jobs_past_retention_are_deleted_in_bounded_sweeps_and_unfinished_ones_kept(
        aiohttp_client, config_for, registry, control):
    cfg = config_for(synthesizer="controlled", retention_s=3600, retention_batch=2)
    client = await aiohttp_client(create_app(cfg, registry=registry))
    service = client.server.app[SERVICE]
    done = [await submit_done(client, f"old-{i}", seed=i) for i in range(5)]
    failed = await (await client.post("/v1/jobs", json=job_body("old-boom", description="boom"))).json()
    assert (await wait_for_state(client, failed["id"]))["state"] == "failed"
    control.gate.clear()
    hold = await (await client.post("/v1/jobs", json=job_body("still-running"))).json()
    await wait_until(lambda: service.store.get(hold["id"]).state == "running")
    waiting = await (await client.post("/v1/jobs", json=job_body("still-queued"))).json()

    assert await service.retention_sweep(now=time.time()) == 0  # nothing is an hour old yet
    later = time.time() + 3601
    sizes = [await service.retention_sweep(now=later) for _ in range(4)]
    assert sizes == [2, 2, 2, 0]  # bounded work per sweep; the failed job goes too
    for j in [*done, failed]:
        assert (await client.get(f"/v1/jobs/{j['id']}")).status == 410
        assert not (cfg.data_dir / "jobs" / j["id"]).exists()
    assert service.store.get(hold["id"]).state == "running" and service.store.get(waiting["id"]).state == "queued"
    body = prometheus(await (await client.get("/metrics")).text())
    assert body['syngrpo_jobs_deleted_total{reason="retention"}'] == 6
    assert body["syngrpo_jobs_done_total"] == 5 and body["syngrpo_jobs_failed_total"] == 1  # counters never go back
    assert body["syngrpo_store_jobs"] == 2
    control.gate.set()


async def test_the_server_runs_retention_by_itself(aiohttp_client, config_for):
    cfg = config_for(retention_s=0.2, retention_sweep_s=0.05)
    client = await aiohttp_client(create_app(cfg))
    job = await submit_done(client, "ttl-1")
    service = client.server.app[SERVICE]
    folder = cfg.data_dir / "jobs" / job["id"]
    await wait_until(lambda: service.store.get(job["id"]) is None and not folder.exists(), timeout=10)
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 410


# ----------------------------------------------------------------------------- disk budget


async def test_a_store_budget_refuses_new_jobs_with_429_before_the_disk_fills_and_takes_them_after_a_delete(
        aiohttp_client, config_for):
    probe_cfg = config_for()
    probe = await aiohttp_client(create_app(probe_cfg))
    resp = await probe.post("/v1/jobs", json=noisy_body("probe"))
    await wait_for_state(probe, (await resp.json())["id"])
    one_job = prometheus(await (await probe.get("/metrics")).text())["syngrpo_store_bytes"]  # files + database
    await probe.close()

    cfg = config_for(max_store_bytes=int(3 * one_job))
    client = await aiohttp_client(create_app(cfg))
    jobs = []
    for i in range(20):
        resp = await client.post("/v1/jobs", json=noisy_body(f"budget-{i}", seed=i))
        if resp.status != 201:
            break
        jobs.append(await wait_for_state(client, (await resp.json())["id"]))
    assert resp.status == 429, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "store_full" and "max_store_bytes" in err["message"]
    assert int(resp.headers["Retry-After"]) >= 1
    assert 1 <= len(jobs) <= 3 and all(j["state"] == "done" for j in jobs)
    assert store_files_bytes(cfg.data_dir) <= cfg.max_store_bytes
    assert len(list((cfg.data_dir / "jobs").iterdir())) == len(jobs)  # the refused job left nothing
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "degraded" and "max_store_bytes" in health["reason"]
    metrics = prometheus(await (await client.get("/metrics")).text())
    assert metrics["syngrpo_submissions_store_full_total"] >= 1
    assert metrics["syngrpo_store_budget_bytes"] == cfg.max_store_bytes

    again = await client.post("/v1/jobs", json=noisy_body("budget-0", seed=0))  # an existing job costs nothing
    assert again.status == 200
    await client.delete(f"/v1/jobs/{jobs[0]['id']}")
    resp = await client.post("/v1/jobs", json=noisy_body("budget-after", seed=99))
    assert resp.status == 201, await resp.text()
    assert (await wait_for_state(client, (await resp.json())["id"]))["state"] == "done"
    assert (await (await client.get("/healthz")).json())["status"] in ("ok", "degraded")


async def test_a_free_space_floor_refuses_new_jobs_with_429_disk_low(aiohttp_client, config_for):
    cfg = config_for(min_free_bytes=2**62)  # more than any disk has free
    client = await aiohttp_client(create_app(cfg))
    resp = await client.post("/v1/jobs", json=job_body("floor-1"))
    assert resp.status == 429
    err = (await resp.json())["error"]
    assert err["code"] == "disk_low" and "min_free_bytes" in err["message"] and "Retry-After" in resp.headers
    assert list((cfg.data_dir / "jobs").iterdir()) == []


async def test_metrics_report_the_store_bytes_and_jobs_kept_and_follow_deletions(aiohttp_client, config_for):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    jobs = [await submit_done(client, f"m-{i}", seed=i) for i in range(3)]
    m = prometheus(await (await client.get("/metrics")).text())
    database = sum(os.path.getsize(p) for p in cfg.data_dir.glob("jobs.sqlite3*"))
    assert m["syngrpo_store_jobs"] == 3
    assert m["syngrpo_store_bytes"] == store_files_bytes(cfg.data_dir) + database
    assert m["syngrpo_store_free_bytes"] > 0
    for j in jobs:
        await client.delete(f"/v1/jobs/{j['id']}")
    m = prometheus(await (await client.get("/metrics")).text())
    assert m["syngrpo_store_jobs"] == 0 and store_files_bytes(cfg.data_dir) == 0
    assert m["syngrpo_store_bytes"] == sum(os.path.getsize(p) for p in cfg.data_dir.glob("jobs.sqlite3*"))
    assert m["syngrpo_jobs_done_total"] == 3 and m['syngrpo_jobs_deleted_total{reason="client"}'] == 3


# ----------------------------------------------------------------------------- crash safety


async def test_a_crash_between_deleting_the_row_and_the_files_leaves_no_served_row_and_no_file_for_ever(
        aiohttp_client, config_for):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    job = await submit_done(client, "crash-del")
    await client.close()  # the server stops; its store is closed

    store = JobStore(cfg.data_dir)
    deleted = store.delete([job["id"]], reason="client")  # the committed half of a deletion ...
    store.close()  # ... and the process dies before the files go
    assert [r.id for r in deleted.deleted] == [job["id"]]
    assert (cfg.data_dir / "jobs" / job["id"]).exists()

    client = await aiohttp_client(create_app(cfg))  # a restart sweeps the orphan folder
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 410
    assert not (cfg.data_dir / "jobs" / job["id"]).exists()


async def test_a_running_job_asked_to_be_deleted_when_the_server_died_is_deleted_at_restart(aiohttp_client,
                                                                                           config_for):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    job = await submit_done(client, "crash-running")
    await client.close()
    with sqlite3.connect(cfg.data_dir / "jobs.sqlite3") as db:  # as a SIGKILL mid-call would leave it
        db.execute("UPDATE jobs SET state = 'running', cancel_requested = 1, delete_requested = 1 WHERE id = ?",
                   (job["id"],))
    client = await aiohttp_client(create_app(cfg))
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 410
    assert not (cfg.data_dir / "jobs" / job["id"]).exists()


OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL, state TEXT NOT NULL, synthesizer TEXT NOT NULL, group_key TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, request TEXT NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, seconds REAL, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0, worker TEXT
);
"""


async def test_a_store_written_by_an_older_server_is_upgraded_and_its_files_counted(aiohttp_client, config_for):
    cfg = config_for()
    client = await aiohttp_client(create_app(cfg))
    job = await submit_done(client, "old-store")
    await client.close()
    old = cfg.data_dir / "jobs.sqlite3"
    with sqlite3.connect(old) as db:  # the same row in the schema of the previous release
        row = db.execute("SELECT seq, id, key, fingerprint, state, synthesizer, group_key, width, height, request,"
                         " created_at, started_at, finished_at, seconds, error, attempts, cancel_requested, worker"
                         " FROM jobs").fetchone()
    for p in cfg.data_dir.glob("jobs.sqlite3*"):
        p.unlink()
    with sqlite3.connect(old) as db:
        db.executescript(OLD_SCHEMA)
        db.execute(f"INSERT INTO jobs VALUES ({','.join('?' * len(row))})", row)

    client = await aiohttp_client(create_app(cfg))
    m = prometheus(await (await client.get("/metrics")).text())
    assert m["syngrpo_store_jobs"] == 1
    assert m["syngrpo_store_bytes"] >= store_files_bytes(cfg.data_dir) > 0
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 200
    assert store_files_bytes(cfg.data_dir) == 0


def test_retention_and_budget_keys_have_sane_defaults_and_refuse_nonsense(config_for):
    from pydantic import ValidationError

    cfg = config_for()
    assert (cfg.retention_s, cfg.retention_sweep_s, cfg.retention_batch) == (86400, 60, 500)
    assert (cfg.tombstone_s, cfg.max_store_bytes, cfg.min_free_bytes) == (7 * 86400, None, 256 * 2**20)
    assert config_for(retention_s=None).retention_s is None  # keep finished jobs until a client deletes them
    for key in ("retention_s", "retention_sweep_s", "retention_batch", "tombstone_s", "max_store_bytes",
                "min_free_bytes"):
        with pytest.raises(ValidationError, match=key):
            config_for(**{key: -1})


# ----------------------------------------------------------------------------- many jobs, bounded disk


async def run_jobs_through_the_trainers_client(url: str, store: JobStore, work, *, jobs: int, delete: bool,
                                               in_flight: int = 8) -> dict[str, int]:
    """Steps of the asynchronous trainer's synthesis (submit, collect) until ``jobs`` came back done;
    the peak of the server's store (rows, job files) seen between steps, and what it holds at the end."""
    from syngrpo.config import SynthesisConfig
    from syngrpo.data.pool import DataPool
    from syngrpo.plugins import get_registry
    from syngrpo.synthesis.client import StepSynthesis, SynthesisClient

    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(work / "data", n=in_flight, split="train", seed=0, image_size=56)
    transport = get_registry().create("transports", "aiohttp", urls=[url], poll_interval_s=0.02)
    cfg = SynthesisConfig(mode="async", transport="aiohttp", max_in_flight=in_flight, delete_collected=delete)
    client = SynthesisClient(transport, DataPool(samples, seed=0), task, cfg, work / "synth")
    peak = {"rows": 0, "files_bytes": 0}
    done = step = 0
    try:
        while done < jobs:
            step += 1
            assert step < 50 * jobs, "synthesis does not keep up"
            report = StepSynthesis()
            await asyncio.to_thread(client.submit, step, 0, [(s, f"a red brick wall, {step}") for s in samples],
                                    report)
            await asyncio.sleep(0.02)
            await asyncio.to_thread(client.collect, report)
            assert report.failed == 0, report.errors
            done += report.done
            peak["rows"] = max(peak["rows"], store.job_count())
            peak["files_bytes"] = max(peak["files_bytes"], store_files_bytes(store.data_dir))
    finally:
        await asyncio.to_thread(client.close)
    return {"done": done, **{f"peak_{k}": v for k, v in peak.items()}, "rows_at_end": store.job_count(),
            "files_bytes_at_end": store_files_bytes(store.data_dir)}


async def test_many_jobs_through_the_trainers_client_keep_the_servers_disk_bounded(aiohttp_server, config_for,
                                                                                  tmp_path):
    """120 jobs through the real client and server: with collection-deletion the store never holds more than
    the jobs in flight and those collected within a poll interval, and nothing at the end; without it, every job."""
    figures = {}
    for delete in (True, False):
        cfg = config_for()
        server = await aiohttp_server(create_app(cfg))
        store = server.app[SERVICE].store
        figures[delete] = await run_jobs_through_the_trainers_client(
            str(server.make_url("")).rstrip("/"), store, tmp_path / f"run-{delete}", jobs=120, delete=delete)
        if not delete:
            one_job = store_files_bytes(cfg.data_dir) / store.job_count()
        await server.close()
    kept, deleted = figures[False], figures[True]
    assert kept["done"] >= 120 and deleted["done"] >= 120
    assert kept["rows_at_end"] >= kept["done"]  # without deletion the store grows with every job
    assert deleted["peak_rows"] <= 2 * 8  # in flight (8) + collected, not yet deleted (8)
    assert deleted["peak_files_bytes"] <= 2 * 8 * one_job * 1.5
    assert deleted["rows_at_end"] <= 8  # the last step's jobs, still in flight (retention takes them)
    assert deleted["files_bytes_at_end"] <= 8 * one_job * 1.5
    assert deleted["peak_files_bytes"] * 4 < kept["files_bytes_at_end"]
