"""The live page's data (issue 28 item 3) against a real app on 127.0.0.1: what ``GET /v1/overview`` says is
what ``/metrics`` says, a token-protected server hands out no data or image without its token, the last pairs
outlive the jobs a trainer deletes, failures are grouped by reason, and a finished run's store opens read-only.
The page itself in a real browser: test_page_browser.py."""

from __future__ import annotations

import io
import os
import sqlite3

import pytest
from PIL import Image

from syngrpo.cli import main as cli_main
from syngrpo.errors import ConfigError
from syngrpo.synthesis.server.app import create_app
from syngrpo.synthesis.server.page import failure_reason
from syngrpo.synthesis.server.readonly import StoreView, create_readonly_app

from .support import job_body, wait_for_state
from .test_api import prometheus

TOKEN = "page-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _overview(client, headers=None) -> dict:
    resp = await client.get("/v1/overview", headers=headers or {})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_the_page_and_its_assets_are_served_without_a_token_and_no_data_is(aiohttp_client, config_for,
                                                                                 registry):
    client = await aiohttp_client(create_app(config_for(token=TOKEN, synthesizer="controlled"), registry=registry))
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert 'src="/page/page.js"' in html and "http" not in html.replace("http-equiv", "")  # no other host: no CDN
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    for asset, ctype in (("/page/page.js", "application/javascript"), ("/page/page.css", "text/css")):
        resp = await client.get(asset)
        assert resp.status == 200 and resp.content_type == ctype
    job = await (await client.post("/v1/jobs", json=job_body("p-1"), headers=AUTH)).json()
    await wait_for_state_auth(client, job["id"])
    for path in ("/v1/overview", f"/v1/overview/pairs/{job['id']}/input.png",
                 f"/v1/overview/pairs/{job['id']}/result.png"):
        refused = await client.get(path)
        assert refused.status == 401, path
        assert (await refused.json())["error"]["code"] == "unauthorized"
        wrong = await client.get(path, headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status == 401, path
    await wait_until_pairs(client, 1, AUTH)
    ok = await client.get(f"/v1/overview/pairs/{job['id']}/result.png", headers=AUTH)
    assert ok.status == 200 and (await ok.read()).startswith(b"\x89PNG")


async def wait_for_state_auth(client, job_id: str) -> dict:
    client.session.headers.update(AUTH)
    try:
        return await wait_for_state(client, job_id)
    finally:
        client.session.headers.pop("Authorization", None)


async def wait_until_pairs(client, n: int, headers=None) -> dict:
    seen = {}

    async def poll():
        seen.update(await _overview(client, headers))
        return len(seen["recent"]) >= n

    for _ in range(300):
        if await poll():
            return seen
        await __import__("asyncio").sleep(0.02)
    raise AssertionError(f"the page kept {len(seen.get('recent', []))} pairs, not {n}")


async def test_the_overview_counts_equal_the_metrics_and_failures_are_grouped_by_reason(aiohttp_client, config_for,
                                                                                       registry):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled", workers=2), registry=registry))
    ids = []
    for i, description in enumerate(["a red wall", "boom one", "a blue sky", "boom two", "a calm sea"]):
        ids.append((await (await client.post("/v1/jobs", json=job_body(f"m-{i}", description=description))).json())["id"])
    for job_id in ids:
        await wait_for_state(client, job_id)
    overview = await wait_until_pairs(client, 3)
    metrics = prometheus(await (await client.get("/metrics")).text())
    assert overview["jobs"]["done_total"] == metrics["syngrpo_jobs_done_total"] == 3
    assert overview["jobs"]["failed_total"] == metrics["syngrpo_jobs_failed_total"] == 2
    assert overview["queue"]["depth"] == metrics["syngrpo_queue_depth"] == 0
    assert overview["queue"]["capacity"] == metrics["syngrpo_queue_capacity"]
    assert [f["count"] for f in overview["failures"]] == [2]  # two messages, one reason
    assert overview["failures"][0]["reason"] == "synthesis failed: RuntimeError"
    assert "boom" in overview["failures"][0]["example"]
    assert overview["rate"]["done_in_window"] == 3 and overview["rate"]["jobs_per_s"] > 0
    assert len(overview["workers"]) == 2 and {w["isolation"] for w in overview["workers"]} == {"thread"}
    assert sum(w["jobs_done"] for w in overview["workers"]) == 3
    assert sum(w["jobs_failed"] for w in overview["workers"]) == 2
    pair = overview["recent"][0]  # newest first
    assert pair["key"] == "m-4" and pair["description"] == "a calm sea" and pair["labels"] == ["red circle",
                                                                                               "blue square"]
    assert pair["boxes"] == [[10.0, 12.0, 40.0, 42.0], [60.0, 20.0, 88.0, 48.0]] and (pair["width"], pair["height"]) == (
        96, 64)


async def test_the_last_pairs_outlive_the_jobs_a_trainer_deletes(aiohttp_client, config_for, registry):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled"), registry=registry))
    job = await (await client.post("/v1/jobs", json=job_body("gone"))).json()
    await wait_for_state(client, job["id"])
    await wait_until_pairs(client, 1)
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 200
    assert (await client.get(f"/v1/jobs/{job['id']}/result.png")).status == 410
    overview = await _overview(client)
    assert [p["id"] for p in overview["recent"]] == [job["id"]] and overview["jobs"]["done_total"] == 1
    for which in ("input", "result"):
        resp = await client.get(f"/v1/overview/pairs/{job['id']}/{which}.png")
        assert resp.status == 200
        assert Image.open(io.BytesIO(await resp.read())).size == (96, 64)  # small images are not scaled up


@pytest.mark.parametrize(("error", "reason"), [
    ("synthesis failed: OutOfMemoryError: CUDA out of memory. Tried 20 MiB", "synthesis failed: OutOfMemoryError"),
    ("label check failed: box 0 (1.0, 2.0, 3.0, 4.0) keeps 3% of its pixels", "label check failed"),
    ("synthesis timed out after 1.5 s (job_timeout_s=1.5)", "synthesis timed out after N s (job_timeout_s=N)"),
    (None, "unknown"),
])
def test_failure_reasons_group_messages_that_differ_only_in_their_numbers(error, reason):
    assert failure_reason(error) == reason


async def test_a_finished_runs_store_opens_read_only_and_nothing_is_written(aiohttp_client, config_for, registry,
                                                                           tmp_path):
    cfg = config_for(synthesizer="controlled")
    live = await aiohttp_client(create_app(cfg, registry=registry))
    for i, description in enumerate(["a red wall", "boom", "a blue sky"]):
        job = await (await live.post("/v1/jobs", json=job_body(f"r-{i}", description=description))).json()
        await wait_for_state(live, job["id"])
    await live.close()  # the server stops: its store is a finished run's now
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in cfg.data_dir.rglob("*") if p.is_file()}

    client = await aiohttp_client(create_readonly_app(cfg.data_dir, token=TOKEN))
    assert (await client.get("/v1/overview")).status == 401
    assert (await client.get("/")).status == 200
    overview = await _overview(client, AUTH)
    assert overview["server"]["read_only"] and overview["workers"] == []
    assert overview["jobs"]["done_total"] == 2 and overview["jobs"]["failed_total"] == 1
    assert [f["reason"] for f in overview["failures"]] == ["synthesis failed: RuntimeError"]
    assert [p["key"] for p in overview["recent"]] == ["r-2", "r-0"]
    img = await client.get(overview["recent"][0]["result"], headers=AUTH)
    assert img.status == 200 and (await img.read()).startswith(b"\x89PNG")
    assert (await client.post("/v1/jobs", json=job_body("x"), headers=AUTH)).status in (404, 405)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in cfg.data_dir.rglob("*") if p.is_file()}
    assert after == before  # nothing written: no database change, no lock taken, no file


async def test_the_read_only_page_works_beside_a_live_server_on_the_same_store(aiohttp_client, config_for, registry):
    cfg = config_for(synthesizer="controlled")
    live = await aiohttp_client(create_app(cfg, registry=registry))
    job = await (await live.post("/v1/jobs", json=job_body("both"))).json()
    await wait_for_state(live, job["id"])
    overview = StoreView(cfg.data_dir).overview()
    assert overview["jobs"]["done_total"] == 1 and overview["recent"][0]["key"] == "both"


def test_a_folder_that_is_no_store_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a data server's store"):
        StoreView(tmp_path)
    assert cli_main(["serve", "--read-only", "--port", "0", "--data-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "not a data server's store" in err and "Traceback" not in err
    assert not (tmp_path / "nothing").exists()


def test_an_empty_store_reads_as_zeros(tmp_path):
    from syngrpo.synthesis.server.store import JobStore

    JobStore(tmp_path / "s").close()
    overview = StoreView(tmp_path / "s").overview()
    assert overview["jobs"]["done_total"] == 0 and overview["recent"] == [] and overview["rate"]["jobs_per_s"] is None
    assert sqlite3.connect(tmp_path / "s" / "jobs.sqlite3").execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert os.path.exists(tmp_path / "s" / "jobs.sqlite3")
