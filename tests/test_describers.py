"""Describers: the ``openai`` client against a real HTTP server, the ``template`` describer, the shared reader.

The hosted model (GPT-4o in the paper) is a boundary this machine cannot cross, so the ``openai``
describer is tested against a *stand-in*: a real aiohttp server on 127.0.0.1 that speaks the
chat-completions protocol (checks the key, the model, the data-URL image) and can be told to fail,
stall or refuse.  Everything on the client side is the real code.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import threading
import time
from typing import Any

import pytest
from PIL import Image

from syngrpo.plugins import get_registry
from syngrpo.synthesis.describers import DescribeRequest, DescriberError, read_descriptions

KEY = "sk-test-0123456789"


class StandinChatServer:
    """A chat-completions stand-in for the hosted model, on its own event loop in a thread."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_first = 0  # answer 503 to this many calls first
        self.status = 200  # then this status
        self.delay_s = 0.0
        self.reply = "1. the red circle on a sandy beach\n- the red circle in a dark forest\n* the red circle in snow\n"
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "stand-in server did not start"

    def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web

        async def completions(request: web.Request) -> web.Response:
            body = await request.json()
            self.calls.append({"auth": request.headers.get("Authorization"), "body": body})
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if request.headers.get("Authorization") != f"Bearer {KEY}":
                return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
            if len(self.calls) <= self.fail_first:
                return web.json_response({"error": {"message": "overloaded"}}, status=503)
            if self.status != 200:
                return web.json_response({"error": {"message": "bad request"}}, status=self.status)
            return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": self.reply}}]})

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", completions)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def standin():
    server = StandinChatServer()
    yield server
    server.close()


def request(n: int = 2) -> DescribeRequest:
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    return DescribeRequest(image=image, question="Locate the red circle.", labels=["red circle"], n=n,
                           sample_id="s-1")


def openai(server: StandinChatServer, **options: Any):
    options = {"base_url": server.base_url, "model": "gpt-4o", "api_key_env": "SYNGRPO_TEST_KEY",
               "backoff_s": 0.01, **options}
    return get_registry().create("describers", "openai", **options)


def test_openai_describer_speaks_chat_completions_with_the_image_as_a_data_url_with_standin_model(
        standin, monkeypatch):
    monkeypatch.setenv("SYNGRPO_TEST_KEY", KEY)
    got = openai(standin).describe([request(2), request(3)])
    assert got == [["the red circle on a sandy beach", "the red circle in a dark forest"],
                   ["the red circle on a sandy beach", "the red circle in a dark forest", "the red circle in snow"]]
    call = standin.calls[0]
    assert call["auth"] == f"Bearer {KEY}" and call["body"]["model"] == "gpt-4o"
    text, image = call["body"]["messages"][1]["content"]
    assert "red circle" in text["text"] and "Locate the red circle." in text["text"]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        assert im.size == (40, 30) and im.getpixel((0, 0)) == (200, 10, 10)


def test_openai_describer_retries_overload_and_then_succeeds_with_standin_model(standin, monkeypatch):
    monkeypatch.setenv("SYNGRPO_TEST_KEY", KEY)
    standin.fail_first = 2
    assert len(openai(standin, retries=2).describe([request(1)])[0]) == 1
    assert len(standin.calls) == 3


def test_openai_describer_gives_up_after_its_retries_naming_the_url_with_standin_model(standin, monkeypatch):
    monkeypatch.setenv("SYNGRPO_TEST_KEY", KEY)
    standin.fail_first = 10
    with pytest.raises(DescriberError, match=r"cannot get descriptions from http://127\.0\.0\.1:\d+/v1/chat/completions "
                                             r"after 2 tries \(HTTP 503"):
        openai(standin, retries=1).describe([request(1)])


def test_a_refused_key_stops_at_once_and_says_which_variable_with_standin_model(standin, monkeypatch):
    monkeypatch.setenv("SYNGRPO_TEST_KEY", "sk-wrong-key")
    with pytest.raises(DescriberError, match=r"refused the request \(HTTP 401.*set \$SYNGRPO_TEST_KEY"):
        openai(standin, retries=3).describe([request(1)])
    assert len(standin.calls) == 1  # no retries on a refused key


def test_a_slow_service_times_out_and_a_bad_answer_gives_no_descriptions_with_standin_model(standin, monkeypatch):
    monkeypatch.setenv("SYNGRPO_TEST_KEY", KEY)
    standin.delay_s = 1.0
    t0 = time.perf_counter()
    with pytest.raises(DescriberError, match="TimeoutError"):
        openai(standin, timeout_s=0.2, retries=1).describe([request(1)])
    assert time.perf_counter() - t0 < 3
    standin.delay_s, standin.status = 0.0, 400
    assert openai(standin).describe([request(1)]) == [[]]


def test_an_unreachable_service_is_a_clear_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    describer = get_registry().create("describers", "openai", base_url=f"http://127.0.0.1:{port}/v1", model="m",
                                      retries=1, backoff_s=0.01)
    with pytest.raises(DescriberError, match=rf"cannot get descriptions from http://127\.0\.0\.1:{port}/v1/chat/"
                                             r"completions after 2 tries \(Client.*is the service running"):
        describer.describe([request(1)])


def test_openai_options_are_checked_when_created():
    with pytest.raises(ValueError, match="base_url must be an http"):
        get_registry().create("describers", "openai", base_url="api.openai.com", model="gpt-4o")


def test_template_describer_is_reproducible_and_names_the_objects():
    describer = get_registry().create("describers", "template")
    a = describer.describe([request(3)])
    assert a == describer.describe([request(3)])
    assert len(a[0]) == 3 and len(set(a[0])) == 3 and all(d.startswith("red circle ") for d in a[0])
    other = DescribeRequest(image=None, question="q", labels=[], n=2, sample_id="s-2")
    assert describer.describe([other])[0] != a[0][:2]


def test_read_descriptions_strips_numbering_and_skips_blanks_and_repeats():
    text = '1) "a beach"\n\n2. a beach\n- a forest at dawn\n(3) a city\n'
    assert read_descriptions(text, 5) == ["a beach", "a forest at dawn", "a city"]
    assert read_descriptions(text, 1) == ["a beach"]
    assert read_descriptions(None, 3) == []
