"""A catalogue of malformed requests: each gets the right 4xx with a JSON error, and the server keeps serving."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image

from syngrpo.synthesis.server.app import create_app

from .support import b64, job_body, png_bytes, scene, wait_for_state

MAX_BODY = 256 * 1024
MAX_PIXELS = 200 * 200


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width x height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def big_png(width: int, height: int) -> bytes:
    return encoded(Image.new("RGB", (width, height), (9, 9, 9)), "PNG")


@pytest.fixture
async def client(aiohttp_client, config_for):
    cfg = config_for(max_request_bytes=MAX_BODY, max_image_pixels=MAX_PIXELS, max_description_chars=200)
    return await aiohttp_client(create_app(cfg))


def raw(body: dict) -> bytes:
    return json.dumps(body).encode()


W, H = scene()[0].size

# (case id, request body bytes, expected status, expected error code)
SUBMISSIONS = [
    ("bad json", b'{"key": "a", "image": ', 400, "bad_json"),
    ("empty body", b"", 400, "bad_json"),
    ("json array instead of object", b"[1, 2, 3]", 422, "invalid_request"),
    ("boxes of the wrong type", raw(job_body(boxes="0,0,10,10")), 422, "invalid_request"),
    ("label that is a number", raw(job_body(labels=[1, 2])), 422, "invalid_request"),
    ("seed as a string", raw(job_body(seed="7")), 422, "invalid_request"),
    ("negative seed", raw(job_body(seed=-1)), 422, "invalid_request"),
    ("missing description", raw({k: v for k, v in job_body().items() if k != "description"}), 422,
     "invalid_request"),
    ("unknown field", raw(job_body(colour="red")), 422, "invalid_request"),
    ("options not an object", raw(job_body(options=["steps", 3])), 422, "invalid_request"),
    ("image not base64", raw(job_body(image="%%% not base64 %%%")), 422, "bad_image"),
    ("corrupt image bytes", raw(job_body(image=b64(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20))), 422, "bad_image"),
    ("truncated png", raw(job_body(image=b64(png_bytes(scene()[0])[:200]))), 422, "bad_image"),
    ("gif is not accepted", raw(job_body(image=b64(encoded(Image.new("RGB", (W, H)), "GIF")))), 422, "bad_image"),
    ("decompression bomb header", raw(job_body(image=b64(png_claiming(60000, 60000)))), 413, "image_too_large"),
    ("more pixels than the limit", raw(job_body(image=b64(big_png(300, 300)))), 413, "image_too_large"),
    ("box outside the image", raw(job_body(boxes=[[10, 10, W + 5, 30], [1, 1, 5, 5]])), 422, "invalid_boxes"),
    ("negative box corner", raw(job_body(boxes=[[-1, 10, 20, 30], [1, 1, 5, 5]])), 422, "invalid_boxes"),
    ("inverted box", raw(job_body(boxes=[[40, 10, 20, 30], [1, 1, 5, 5]])), 422, "invalid_boxes"),
    ("empty box", raw(job_body(boxes=[[20, 10, 20, 30], [1, 1, 5, 5]])), 422, "invalid_boxes"),
    ("box with three numbers", raw(job_body(boxes=[[1, 2, 3], [1, 1, 5, 5]])), 422, "invalid_boxes"),
    ("box holding NaN", b'{"key": "n", "image": "' + job_body()["image"].encode() +
     b'", "boxes": [[1, 2, 3, NaN], [1, 1, 5, 5]], "labels": ["a", "b"], "description": "d"}', 422, "invalid_boxes"),
    ("no boxes", raw(job_body(boxes=[], labels=[])), 422, "invalid_boxes"),
    ("labels do not match boxes", raw(job_body(labels=["only one"])), 422, "invalid_boxes"),
    ("empty label", raw(job_body(labels=["red circle", "  "])), 422, "invalid_labels"),
    ("empty description", raw(job_body(description="   ")), 422, "invalid_description"),
    ("oversized description", raw(job_body(description="x" * 201)), 422, "invalid_description"),
    ("unknown synthesizer", raw(job_body(options={"synthesizer": "dall-e"})), 422, "unknown_synthesizer"),
    ("path-like key", raw(job_body(key="../../etc/passwd")), 422, "invalid_key"),
    ("key with a slash", raw(job_body(key="a/b")), 422, "invalid_key"),
    ("oversized body", raw(job_body(description="y" * 10, options={"pad": "z" * MAX_BODY})), 413,
     "request_too_large"),
]


@pytest.mark.parametrize(("case", "body", "status", "code"), SUBMISSIONS, ids=[c[0] for c in SUBMISSIONS])
async def test_malformed_submission_gets_its_4xx_and_the_server_keeps_serving(client, case, body, status, code):
    resp = await client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    payload = await resp.json()
    assert resp.status == status, payload
    assert payload["error"]["code"] == code
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    # nothing was queued, and a good job still goes through
    assert (await (await client.get("/v1/jobs")).json())["jobs"] == []
    good = await client.post("/v1/jobs", json=job_body(f"good-{abs(hash(case)) % 10**8}"))
    assert good.status == 201
    assert (await wait_for_state(client, (await good.json())["id"]))["state"] == "done"


ROUTES = [
    ("unknown job id", "GET", "/v1/jobs/" + "0" * 32, 404, "not_found"),
    ("unknown job result", "GET", "/v1/jobs/" + "a" * 32 + "/result.png", 404, "not_found"),
    ("cancel of an unknown job", "POST", "/v1/jobs/" + "b" * 32 + "/cancel", 404, "not_found"),
    ("path-like id, encoded", "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", 400, "invalid_id"),
    ("id with a dot", "GET", "/v1/jobs/input.png", 400, "invalid_id"),
    ("id in upper case", "GET", "/v1/jobs/" + "A" * 32, 400, "invalid_id"),
    ("path-like ids in a list", "GET", "/v1/jobs?ids=../../x", 400, "invalid_id"),
    ("unknown state filter", "GET", "/v1/jobs?state=exploded", 400, "invalid_query"),
    ("limit not a number", "GET", "/v1/jobs?limit=lots", 400, "invalid_query"),
    ("limit out of range", "GET", "/v1/jobs?limit=0", 400, "invalid_query"),
    ("unknown route", "GET", "/v2/everything", 404, "not_found"),
    ("wrong method", "DELETE", "/v1/jobs", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("case", "method", "path", "status", "code"), ROUTES, ids=[r[0] for r in ROUTES])
async def test_malformed_route_or_query_gets_its_4xx_json_error(client, case, method, path, status, code):
    resp = await client.request(method, path)
    payload = await resp.json()
    assert resp.status == status, payload
    assert payload["error"]["code"] == code
    assert (await client.get("/healthz")).status == 200


async def test_wrong_content_type_is_415(client):
    resp = await client.post("/v1/jobs", data=b"key=a", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"


async def test_results_of_unfinished_or_failed_jobs_are_refused_with_the_reason(aiohttp_client, config_for,
                                                                              registry, control):
    client = await aiohttp_client(create_app(config_for(synthesizer="controlled"), registry=registry))
    failed = await (await client.post("/v1/jobs", json=job_body("f-1", description="boom now"))).json()
    await wait_for_state(client, failed["id"])
    resp = await client.get(f"/v1/jobs/{failed['id']}/result")
    assert resp.status == 409
    err = (await resp.json())["error"]
    assert err["code"] == "job_failed" and "boom requested" in err["message"]
    control.gate.clear()
    running = await (await client.post("/v1/jobs", json=job_body("f-2"))).json()
    resp = await client.get(f"/v1/jobs/{running['id']}/result.png")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "not_ready"
    control.gate.set()


async def test_an_oversized_chunked_body_without_content_length_is_413_too(client):
    async def chunks():
        for _ in range(8):
            yield b"x" * (MAX_BODY // 4)

    resp = await client.post("/v1/jobs", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"
    assert (await client.get("/healthz")).status == 200
