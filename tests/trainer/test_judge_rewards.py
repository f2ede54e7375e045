"""A training step whose rewards come from judges: a reward service on 127.0.0.1 and a tiny reward model."""

from __future__ import annotations

import asyncio
import threading

import pytest

from syngrpo.train.trainer import Trainer


class JudgeService:
    """A reward service on its own event loop in a thread: every item scores 0.25; records what it got."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "judge service did not start"

    def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web

        async def score(request: web.Request) -> web.Response:
            body = await request.json()
            self.items.extend(body["items"])
            return web.json_response({"rewards": [0.25] * len(body["items"])})

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/score", score)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/score"  # type: ignore[union-attr]
            ready.set()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def judge():
    service = JudgeService()
    yield service
    service.close()


def test_a_step_sums_a_remote_and_a_reward_model_reward_and_logs_each(judge, tiny_policy_dir, tmp_path, config_for):
    from syngrpo_rewards.tiny import build_tiny_reward_model

    rm = build_tiny_reward_model(tmp_path / "judge")
    cfg = config_for(tiny_policy_dir, "rewards.terms=[{name: format}, "
                                      f"{{name: remote, options: {{url: '{judge.url}', batch_size: 4}}}}, "
                                      f"{{name: reward_model, weight: 0.5, options: {{model: '{rm}'}}}}]")
    with Trainer(cfg, tmp_path / "run") as trainer:
        trainer.setup()
        metrics = trainer.train_step(1)
    assert len(judge.items) == 2 * 3  # batch 2 x 3 rollouts, in batches of 4
    assert {item["sample"]["task"] for item in judge.items} == {"rec"}
    assert metrics["reward/remote"] == pytest.approx(0.25)
    assert metrics["reward/total"] == pytest.approx(metrics["reward/format"] + metrics["reward/remote"]
                                                    + metrics["reward/reward_model"])
