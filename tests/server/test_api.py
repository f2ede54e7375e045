"""The data server's HTTP API end to end: real app, real aiohttp client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import re

import pytest
from PIL import Image

from syngrpo.cli import main as cli_main
from syngrpo.errors import ConfigError
from syngrpo.synthesis.server.app import create_app
from syngrpo.synthesis.server.config import ServerConfig, check_bind_security

from .support import job_body, kept_pixels_equal, scene, wait_for_state, wait_until


def prometheus(text: str) -> dict[str, float]:
    """Sample name (with labels) -> value, from Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.fixture
async def client(aiohttp_client, config_for):
    return await aiohttp_client(create_app(config_for()))


async def test_submitted_job_is_acknowledged_at_once_and_finishes_with_the_labelled_pixels_kept(client):
    resp = await client.post("/v1/jobs", json=job_body("a-1"))
    assert resp.status == 201
    job = await resp.json()
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["key"] == "a-1" and re.fullmatch(r"[0-9a-f]{32}", job["id"])

    done = await wait_for_state(client, job["id"])
    assert done["state"] == "done", done["error"]
    assert done["seconds"] >= 0 and done["attempts"] == 1

    result = Image.open(io.BytesIO(await (await client.get(f"/v1/jobs/{job['id']}/result.png")).read()))
    mask = Image.open(io.BytesIO(await (await client.get(f"/v1/jobs/{job['id']}/mask.png")).read()))
    original, boxes, labels = scene()
    assert result.size == original.size
    assert kept_pixels_equal(original, result, mask)
    assert result.convert("RGB").tobytes() != original.tobytes()  # the background was repainted


async def test_result_json_carries_the_new_image_with_the_original_boxes_and_labels(client):
    job = await (await client.post("/v1/jobs", json=job_body("r-1"))).json()
    await wait_for_state(client, job["id"])
    resp = await client.get(f"/v1/jobs/{job['id']}/result")
    assert resp.status == 200
    res = await resp.json()
    _, boxes, labels = scene()
    assert res["boxes"] == [list(b) for b in boxes] and res["labels"] == labels
    png = base64.b64decode(res["image"])
    assert png == await (await client.get(f"/v1/jobs/{job['id']}/result.png")).read()


async def test_a_retried_submit_with_the_same_key_returns_the_same_job_and_creates_no_second(client):
    first = await client.post("/v1/jobs", json=job_body("same-key"))
    second = await client.post("/v1/jobs", json=job_body("same-key"))
    assert (first.status, second.status) == (201, 200)
    assert (await first.json())["id"] == (await second.json())["id"]
    listing = await (await client.get("/v1/jobs", params={"key": "same-key"})).json()
    assert len(listing["jobs"]) == 1


async def test_reusing_a_key_for_different_content_is_a_conflict(client):
    await client.post("/v1/jobs", json=job_body("k-9"))
    resp = await client.post("/v1/jobs", json=job_body("k-9", description="something else entirely"))
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "key_conflict"


async def test_list_filters_by_state_and_ids_and_pages_with_a_cursor(client):
    ids = []
    for i in range(5):
        ids.append((await (await client.post("/v1/jobs", json=job_body(f"l-{i}"))).json())["id"])
    for i in ids:
        await wait_for_state(client, i)
    page1 = await (await client.get("/v1/jobs", params={"limit": "2"})).json()
    page2 = await (await client.get("/v1/jobs", params={"limit": "2", "after": str(page1["next_after"])})).json()
    assert [j["id"] for j in page1["jobs"]] == ids[:2] and [j["id"] for j in page2["jobs"]] == ids[2:4]
    some = await (await client.get("/v1/jobs", params={"ids": f"{ids[1]},{ids[3]}", "state": "done"})).json()
    assert sorted(j["id"] for j in some["jobs"]) == sorted([ids[1], ids[3]])
    assert (await (await client.get("/v1/jobs", params={"state": "queued"})).json())["jobs"] == []


async def test_cancelling_a_queued_job_means_it_never_runs(aiohttp_client, config_for, registry, control):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled"), registry=registry))
    control.gate.clear()  # the first job holds the only worker
    first = await (await client.post("/v1/jobs", json=job_body("c-1"))).json()
    await wait_until(lambda: len(control.calls) == 1)
    queued = await (await client.post("/v1/jobs", json=job_body("c-2"))).json()
    resp = await client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert resp.status == 200 and (await resp.json())["state"] == "cancelled"
    control.gate.set()
    assert (await wait_for_state(client, first["id"]))["state"] == "done"
    await asyncio.sleep(0.1)
    assert len(control.calls) == 1  # the cancelled job never reached the synthesizer
    again = await client.post(f"/v1/jobs/{first['id']}/cancel")
    assert again.status == 409 and (await again.json())["error"]["code"] == "already_final"


async def test_a_full_queue_answers_429_with_retry_after_and_loses_nothing(aiohttp_client, config_for, registry,
                                                                           control):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled", queue_size=2), registry=registry))
    control.gate.clear()
    accepted = [(await (await client.post("/v1/jobs", json=job_body("q-0"))).json())["id"]]
    await wait_until(lambda: len(control.calls) == 1)  # q-0 is running, the queue is empty
    for i in (1, 2):
        resp = await client.post("/v1/jobs", json=job_body(f"q-{i}"))
        assert resp.status == 201
        accepted.append((await resp.json())["id"])
    full = await client.post("/v1/jobs", json=job_body("q-3"))
    assert full.status == 429
    assert int(full.headers["Retry-After"]) >= 1
    assert (await full.json())["error"]["code"] == "queue_full"
    # a retried submit of an accepted job is still answered while the queue is full
    assert (await client.post("/v1/jobs", json=job_body("q-1"))).status == 200
    control.gate.set()
    states = [(await wait_for_state(client, i))["state"] for i in accepted]
    assert states == ["done"] * 3
    metrics = prometheus(await (await client.get("/metrics")).text())
    assert metrics["syngrpo_submissions_rejected_total"] == 1


async def test_queued_jobs_of_one_synthesizer_run_as_one_batched_call(aiohttp_client, config_for, registry, control):
    cfg = config_for(synthesizer="controlled", batch_size=4, queue_size=10)
    client = await aiohttp_client(create_app(cfg, registry=registry))
    control.gate.clear()
    ids = [(await (await client.post("/v1/jobs", json=job_body("b-0"))).json())["id"]]
    await wait_until(lambda: len(control.calls) == 1)
    for i in range(1, 5):
        ids.append((await (await client.post("/v1/jobs", json=job_body(f"b-{i}"))).json())["id"])
    control.gate.set()
    for i in ids:
        assert (await wait_for_state(client, i))["state"] == "done"
    assert [n for _, n, _ in control.calls] == [1, 4]


async def test_each_worker_gets_its_own_synthesizer_on_its_device(aiohttp_client, config_for, registry, control):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled", workers=["cpu", "cpu"]),
                                             registry=registry))
    await wait_until(lambda: len(control.created) == 2)
    health = await (await client.get("/healthz")).json()
    assert [w["device"] for w in health["workers"]] == ["cpu", "cpu"]
    assert health["status"] == "ok" and control.created == ["cpu", "cpu"]


async def test_healthz_and_metrics_report_queue_counts_and_job_times(client):
    ids = [(await (await client.post("/v1/jobs", json=job_body(f"m-{i}"))).json())["id"] for i in range(3)]
    for i in ids:
        await wait_for_state(client, i)
    health = await client.get("/healthz")
    assert health.status == 200
    body = await health.json()
    assert body["status"] == "ok" and body["queue_depth"] == 0 and body["workers"][0]["state"] in ("ready", "busy")
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert "# TYPE syngrpo_jobs_done_total counter" in text
    m = prometheus(text)
    assert m["syngrpo_queue_depth"] == 0 and m["syngrpo_jobs_running"] == 0
    assert m["syngrpo_jobs_done_total"] == 3 and m["syngrpo_jobs_failed_total"] == 0
    assert 0 < m["syngrpo_job_seconds_mean"] <= m["syngrpo_job_seconds_p95"] * 3
    assert m['syngrpo_workers{state="broken"}'] == 0


async def test_with_a_token_every_route_but_healthz_needs_the_bearer_token(aiohttp_client, config_for):
    client = await aiohttp_client(create_app(config_for(token="s3cret-token")))
    assert (await client.get("/healthz")).status == 200
    for method, path in (("GET", "/v1/jobs"), ("GET", "/metrics"), ("POST", "/v1/jobs")):
        resp = await client.request(method, path, json=job_body("t-1"))
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    wrong = await client.get("/v1/jobs", headers={"Authorization": "Bearer nope-nope-nope"})
    assert wrong.status == 401
    ok = await client.post("/v1/jobs", json=job_body("t-1"), headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status == 201


def test_binding_beyond_loopback_without_a_token_is_refused():
    check_bind_security("127.0.0.1", None)
    check_bind_security("::1", None)
    check_bind_security("localhost", None)
    check_bind_security("0.0.0.0", "a-long-token-with-16+-chars")
    for host in ("0.0.0.0", "192.168.1.7", "::", "example.org"):
        with pytest.raises(ConfigError, match="without a token"):
            check_bind_security(host, None)


def test_syngrpo_serve_refuses_a_public_bind_without_a_token(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("SYNGRPO_SERVER_TOKEN", raising=False)
    code = cli_main(["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "refusing to bind '0.0.0.0' without a token" in capsys.readouterr().err


def test_server_config_defaults_are_the_cpu_laptop_setup():
    cfg = ServerConfig()
    assert (cfg.host, cfg.synthesizer, cfg.segmenter, cfg.workers) == ("127.0.0.1", "procedural", "box", ["cpu"])
    assert ServerConfig(workers=3).workers == ["cpu"] * 3
    with pytest.raises(ValueError):
        ServerConfig(workers=["gpu0"])


@pytest.mark.parametrize("name", ["server_cpu.yaml", "server_sdxl_ben2.yaml"])
def test_the_shipped_server_configs_are_valid(name):
    from pathlib import Path

    from syngrpo.config.io import load_config

    cfg = load_config(ServerConfig, Path(__file__).resolve().parents[2] / "configs" / name)
    assert cfg.host == "127.0.0.1" and cfg.workers


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path):
    from syngrpo.synthesis.server.spawn import ServerStartError, start_server_subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("synthesiser: procedural\n")  # misspelt key
    with pytest.raises(ServerStartError, match=r"exited with status 2(.|\n)*synthesiser: unknown key"):
        start_server_subprocess(bad, data_dir=tmp_path / "data", startup_timeout_s=30)
