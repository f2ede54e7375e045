"""The ``remote`` reward: scores come from an HTTP service (a GPU-heavy judge the trainer process cannot host).

The protocol (one POST per batch of ``batch_size`` responses, up to ``max_concurrency`` in flight)::

    POST {url}
    {"task": "rec",
     "items": [{"completion": "<think>..</think><answer>[1,2,3,4]</answer>",
                "think": "..", "answer": "[1,2,3,4]", "score": null, "description": null, "well_formed": true,
                "sample": {"id": "s-1", "task": "rec", "image": "/data/img.jpg", "problem": "..",
                           "solution": [..], "width": 640, "height": 480, "meta": {..}, ...},
                "frame": {"sx": 0.5, "sy": 0.5, "tx": 0.0, "ty": 0.0, "width": 320, "height": 240} | null},
               ...]}
    -> 200 {"rewards": [0.73, ...]}       # one finite number per item, in order

``frame`` maps the sample's original image to the image the model saw (a prediction in the model's
frame goes back with ``x' = (x - tx) / sx``); ``sample.image`` is a path on the trainer's machine.

Failure policy (``docs/hooks/rewards.md``):

* A connection error, a timeout (``timeout_s`` per request, total) or HTTP 408/409/429/5xx is retried
  ``retries`` times with exponential back-off from ``backoff_s`` (``Retry-After`` honoured, at most 60 s).
* Any other HTTP status (400, 401, 404, ...) is a wrong URL, key or payload: retrying cannot help, so the
  run stops at once (:class:`RemoteRewardError` naming the URL and the server's message), whatever the policy.
* A batch still failing after its retries, or answered with something that is not one finite number per
  item, is a *failed call*.  ``on_failure: raise`` (the default) stops the step with a
  :class:`RemoteRewardError`; ``on_failure: score`` gives that batch's responses ``failure_score`` with a
  :class:`~syngrpo.perception.rewards.RewardWarning` and goes on, until ``max_consecutive_failures`` calls in a row
  have failed: then the run stops anyway, because a dead judge must not train the policy on constant rewards.

The only state is that count of consecutive failed calls (reset by any call that works).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from syngrpo.errors import ConfigError
from syngrpo.perception.rewards import RewardWarning
from syngrpo.types import ParsedResponse, Sample

if TYPE_CHECKING:  # pragma: no cover
    from syngrpo.perception.geometry import ImageTransform
    from syngrpo.perception.task import Task

#: statuses a busy or restarting service answers: worth another try
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_POLICIES = ("raise", "score")


class RemoteRewardError(RuntimeError):
    """The reward service cannot score this run's responses: the step (and the run) stops."""


class _Failed:
    """Why one batch got no rewards (a failed call under the failure policy)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class RemoteReward:
    """Scores responses by POSTing them, in batches, to a reward service (see the module docstring)."""

    name = "remote"

    def __init__(self, *, url: str, batch_size: int = 32, max_concurrency: int = 4, timeout_s: float = 60.0,
                 connect_timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 1.0,
                 on_failure: str = "raise", failure_score: float = 0.0, max_consecutive_failures: int = 3,
                 api_key_env: str | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"remote reward: url must be an http(s) URL such as http://judge:8000/score, got {url!r}")
        if batch_size < 1 or max_concurrency < 1 or max_consecutive_failures < 1:
            raise ConfigError("remote reward: batch_size, max_concurrency and max_consecutive_failures must be >= 1")
        if timeout_s <= 0 or connect_timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ConfigError("remote reward: timeout_s and connect_timeout_s must be > 0, retries and backoff_s >= 0")
        if on_failure not in _POLICIES:
            raise ConfigError(f"remote reward: on_failure must be one of {list(_POLICIES)}, got {on_failure!r}")
        if not math.isfinite(float(failure_score)):
            raise ConfigError(f"remote reward: failure_score must be a finite number, got {failure_score!r}")
        self.url = url
        self.batch_size = int(batch_size)
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.on_failure = on_failure
        self.failure_score = float(failure_score)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.api_key_env = api_key_env
        self.consecutive_failures = 0

    # ---- the request ------------------------------------------------------------------------
    @staticmethod
    def item(response: ParsedResponse, sample: Sample, frame: ImageTransform | None) -> dict[str, Any]:
        """One item of a request body (public for tests and for writing a service)."""
        return {
            "completion": response.text,
            "think": response.think,
            "answer": response.answer,
            "score": response.score,
            "description": response.description,
            "well_formed": bool(response.well_formed),
            "sample": sample.to_dict() if hasattr(sample, "to_dict") else sample,
            "frame": dataclasses.asdict(frame) if dataclasses.is_dataclass(frame) else None,
        }

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # ---- the reward call ----------------------------------------------------------------------
    def __call__(self, responses: Sequence[ParsedResponse], samples: Sequence[Sample], *, task: Task,
                 frames: Sequence[ImageTransform | None] | None = None) -> list[float]:
        if len(responses) != len(samples):
            raise ValueError(f"{len(responses)} responses but {len(samples)} samples: pass the sample of every response")
        if frames is not None and len(frames) != len(responses):
            raise ValueError(f"{len(frames)} frames for {len(responses)} responses: pass one frame (or None) each")
        if not responses:
            return []
        each_frame = list(frames) if frames is not None else [None] * len(responses)
        items = [self.item(r, s, f) for r, s, f in zip(responses, samples, each_frame, strict=True)]
        task_name = getattr(task, "name", None)
        bodies = [{"task": task_name, "items": items[i:i + self.batch_size]}
                  for i in range(0, len(items), self.batch_size)]
        results = _run_sync(self._post_all(bodies))
        values: list[float] = []
        for index, (body, result) in enumerate(zip(bodies, results, strict=True)):
            if isinstance(result, _Failed):
                values.extend(self._failed(index, len(bodies), body, result.reason))
            else:
                self.consecutive_failures = 0
                values.extend(result)
        return values

    def _failed(self, index: int, count: int, body: dict[str, Any], reason: str) -> list[float]:
        """The failure policy for one failed call: the batch's rewards, or a :class:`RemoteRewardError`."""
        ids = [str(item["sample"].get("id", "?")) if isinstance(item["sample"], dict) else "?" for item in body["items"]]
        where = (f"remote reward {self.url}: batch {index + 1}/{count} ({len(ids)} responses, samples "
                 f"{', '.join(sorted(set(ids))[:5])}{' ...' if len(set(ids)) > 5 else ''})")
        if self.on_failure == "raise":
            raise RemoteRewardError(f"{where} failed: {reason}. Is the service up and the url right? "
                                    "(on_failure: score keeps training through short outages)")
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.max_consecutive_failures:
            raise RemoteRewardError(f"{where} failed: {reason}; that is {self.consecutive_failures} failed calls in a "
                                    f"row (max_consecutive_failures={self.max_consecutive_failures}): stopping rather "
                                    f"than training on failure_score={self.failure_score}")
        warnings.warn(f"{where} failed ({reason}); its responses score failure_score={self.failure_score} "
                      f"({self.consecutive_failures}/{self.max_consecutive_failures} failed calls in a row)",
                      RewardWarning, stacklevel=3)
        return [self.failure_score] * len(body["items"])

    async def _post_all(self, bodies: list[dict[str, Any]]) -> list[list[float] | _Failed]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout_s, connect=self.connect_timeout_s)
        gate = asyncio.Semaphore(self.max_concurrency)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers()) as session:
            async def one(body: dict[str, Any]) -> list[float] | _Failed:
                async with gate:
                    return await self._post_one(session, body, _encode(body))

            return list(await asyncio.gather(*(one(b) for b in bodies)))

    async def _post_one(self, session: Any, body: dict[str, Any], data: bytes) -> list[float] | _Failed:
        import aiohttp

        last, retry_after = "", None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                async with session.post(self.url, data=data) as resp:
                    text = await resp.text()
                    if resp.status in RETRY_STATUS:
                        last, retry_after = f"HTTP {resp.status}: {text[:200]}", resp.headers.get("Retry-After")
                        continue
                    if resp.status != 200:
                        hint = f" (is ${self.api_key_env} set to a valid key?)" if resp.status in (401, 403) else ""
                        raise RemoteRewardError(f"remote reward {self.url} refused the request with HTTP {resp.status}"
                                                f": {text[:300]}{hint}; retrying cannot help, so the run stops")
                    return _read_rewards(text, len(body["items"]))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        return _Failed(f"no answer after {self.retries + 1} tries (last: {last})")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential back-off, or the server's ``Retry-After`` seconds (at most 60)."""
        if retry_after is not None:
            try:
                return min(60.0, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return self.backoff_s * 2 ** (attempt - 1)


def _encode(body: dict[str, Any]) -> bytes:
    """The JSON of a request; a value JSON cannot hold (a numpy number in a sample's ``meta``) is sent as text."""
    import json

    return json.dumps(body, default=str).encode("utf-8")


def _read_rewards(text: str, n: int) -> list[float] | _Failed:
    """The ``rewards`` of a 200 reply, or why the reply is unusable (not retried: the service answered)."""
    import json

    try:
        rewards = json.loads(text)["rewards"]
        values = [float(v) for v in rewards]
    except (ValueError, KeyError, TypeError):
        return _Failed(f'the reply is not {{"rewards": [number, ...]}}: {text[:200]!r}')
    if len(values) != n:
        return _Failed(f"the reply has {len(values)} rewards for {n} items")
    if not all(math.isfinite(v) for v in values):
        return _Failed(f"the reply has non-finite rewards {[v for v in values if not math.isfinite(v)][:3]}")
    return values


def _run_sync(coro: Any) -> Any:
    """Run ``coro`` to completion from synchronous code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # a notebook's loop: use a fresh thread
        return pool.submit(asyncio.run, coro).result()
