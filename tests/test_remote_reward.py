"""The ``remote`` reward against a real aiohttp reward service on 127.0.0.1 (its own event loop, in a thread)."""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any

import pytest

from syngrpo.errors import ConfigError
from syngrpo.perception.geometry import ImageTransform
from syngrpo.perception.response import parse_response
from syngrpo.perception.rewards import RewardWarning
from syngrpo.plugins import build_registry, make_plugin_manager
from syngrpo.types import Sample


class Task:
    name = "rec"


class RewardService:
    """A judge service: reward = len(answer) / 10, with knobs for failures, delays and bad replies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_first = 0  # answer 503 to this many calls first
        self.status = 200  # then this status
        self.delay_s = 0.0
        self.reply: Any = None  # a fixed JSON reply instead of the rewards
        self.in_flight = 0
        self.max_in_flight = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "reward service did not start"

    def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web

        async def score(request: web.Request) -> web.Response:
            body = await request.json()
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if len(self.bodies) <= self.fail_first:
                    return web.json_response({"error": "warming up"}, status=503)
                if self.status != 200:
                    return web.json_response({"error": "no such judge"}, status=self.status)
                if self.reply is not None:
                    return web.json_response(self.reply)
                return web.json_response({"rewards": [len(item["answer"] or "") / 10 for item in body["items"]]})
            finally:
                self.in_flight -= 1

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/score", score)
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
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def service():
    server = RewardService()
    yield server
    server.close()


def remote(url: str, **options: Any):
    import syngrpo_rewards.plugin

    registry = build_registry(make_plugin_manager([syngrpo_rewards.plugin], autoload=False))
    return registry.create("rewards", "remote", url=url, **{"backoff_s": 0.01, **options})


def batch(n: int):
    samples = [Sample(id=f"s-{i // 2}", task="rec", image=f"/data/{i // 2}.jpg", problem="Where is the cat?",
                      solution=[1, 2, 3, 4], width=64, height=48) for i in range(n)]
    responses = [parse_response(f"<think>t</think><answer>{'x' * i}</answer>", "plain") for i in range(n)]
    return responses, samples


def test_remote_reward_scores_in_order_across_batches_and_sends_what_the_protocol_says(service):
    responses, samples = batch(7)
    frames = [ImageTransform.resize(64, 48, 32, 24)] * 7
    values = remote(service.url, batch_size=3)(responses, samples, task=Task(), frames=frames)
    assert values == [i / 10 for i in range(7)]
    assert sorted(len(b["items"]) for b in service.bodies) == [1, 3, 3]
    first = next(b for b in service.bodies if b["items"][0]["answer"] == "")
    item = first["items"][0]
    assert first["task"] == "rec"
    assert item["completion"] == "<think>t</think><answer></answer>" and item["well_formed"] is True
    assert item["sample"]["id"] == "s-0" and item["sample"]["solution"] == [1, 2, 3, 4]
    assert item["frame"]["sx"] == 0.5 and item["frame"]["width"] == 32


def test_remote_reward_keeps_at_most_max_concurrency_requests_in_flight(service):
    service.delay_s = 0.1
    responses, samples = batch(8)
    remote(service.url, batch_size=1, max_concurrency=3)(responses, samples, task=Task())
    assert len(service.bodies) == 8
    assert service.max_in_flight == 3


def test_remote_reward_retries_a_busy_service_then_scores(service):
    service.fail_first = 2
    responses, samples = batch(2)
    assert remote(service.url, retries=2)(responses, samples, task=Task()) == [0.0, 0.1]
    assert len(service.bodies) == 3


def test_remote_reward_stops_the_run_when_the_service_stays_down_under_on_failure_raise(service):
    service.fail_first = 100
    responses, samples = batch(2)
    with pytest.raises(Exception, match=r"remote reward http://127\.0\.0\.1:\d+/score: batch 1/1 .*samples s-0.*"
                                        r"HTTP 503") as info:
        remote(service.url, retries=1)(responses, samples, task=Task())
    assert type(info.value).__name__ == "RemoteRewardError"
    assert len(service.bodies) == 2  # the first try and one retry


def test_remote_reward_a_timeout_is_a_failed_call_scored_by_the_policy(service):
    service.delay_s = 2.0
    responses, samples = batch(2)
    reward = remote(service.url, timeout_s=0.2, retries=0, on_failure="score", failure_score=-1.0)
    with pytest.warns(RewardWarning, match="TimeoutError.*failure_score=-1.0"):
        assert reward(responses, samples, task=Task()) == [-1.0, -1.0]


def test_remote_reward_under_on_failure_score_stops_after_max_consecutive_failures_and_a_success_resets(service):
    responses, samples = batch(2)
    reward = remote(service.url, retries=0, on_failure="score", max_consecutive_failures=2)
    service.fail_first = 1
    with pytest.warns(RewardWarning, match="1/2 failed calls in a row"):
        assert reward(responses, samples, task=Task()) == [0.0, 0.0]
    assert reward(responses, samples, task=Task()) == [0.0, 0.1]  # works again: the count starts over
    service.fail_first = 100
    with pytest.warns(RewardWarning):
        reward(responses, samples, task=Task())
    with pytest.raises(Exception, match="2 failed calls in a row .*stopping rather than training on failure_score"):
        reward(responses, samples, task=Task())


def test_remote_reward_a_client_error_stops_at_once_whatever_the_policy(service):
    service.status = 404
    responses, samples = batch(2)
    with pytest.raises(Exception, match="HTTP 404.*no such judge.*retrying cannot help"):
        remote(service.url, on_failure="score", retries=3)(responses, samples, task=Task())
    assert len(service.bodies) == 1


@pytest.mark.parametrize("reply, why", [
    ({"rewards": [1.0]}, "1 rewards for 2 items"),
    ({"rewards": [1.0, "NaN"]}, "non-finite"),
    ({"scores": [1.0, 2.0]}, "not .*rewards"),
])
def test_remote_reward_an_unusable_reply_is_a_failed_call_not_retried(service, reply, why):
    service.reply = reply
    responses, samples = batch(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert remote(service.url, on_failure="score", failure_score=0.5)(responses, samples, task=Task()) == [0.5, 0.5]
    assert any(why.split(" ")[0] in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert len(service.bodies) == 1


def test_remote_reward_unreachable_service_names_the_url():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    responses, samples = batch(1)
    with pytest.raises(Exception, match=rf"127\.0\.0\.1:{port}/score.*no answer after 2 tries"):
        remote(f"http://127.0.0.1:{port}/score", retries=1)(responses, samples, task=Task())


def test_remote_reward_works_when_called_from_inside_an_event_loop(service):
    responses, samples = batch(2)
    reward = remote(service.url)

    async def in_a_notebook():
        return reward(responses, samples, task=Task())

    assert asyncio.run(in_a_notebook()) == [0.0, 0.1]


@pytest.mark.parametrize("options, message", [
    ({"url": "judge:8000"}, "http"),
    ({"url": "http://x", "on_failure": "ignore"}, "on_failure"),
    ({"url": "http://x", "batch_size": 0}, "batch_size"),
    ({"url": "http://x", "timeout": 3}, r"unknown option\(s\) \['timeout'\] for reward 'remote'.*timeout_s"),
])
def test_remote_reward_bad_options_are_config_errors(options, message):
    import syngrpo_rewards.plugin

    registry = build_registry(make_plugin_manager([syngrpo_rewards.plugin], autoload=False))
    with pytest.raises(ConfigError, match=message):
        registry.create("rewards", "remote", **options)


def test_remote_and_reward_model_are_installed_rewards():
    registry = build_registry(make_plugin_manager())
    assert {"remote", "reward_model"} <= set(registry.names("rewards"))


def test_remote_reward_sends_a_sample_whose_meta_json_cannot_hold_as_text(service):
    from pathlib import Path

    responses, samples = batch(1)
    samples[0].meta["source"] = Path("/data/raw/0.jpg")  # not JSON: a dataset reader's path object
    assert remote(service.url)(responses, samples, task=Task()) == [0.0]
    assert service.bodies[0]["items"][0]["sample"]["meta"]["source"] == "/data/raw/0.jpg"
