"""The ``openai`` describer: any service speaking OpenAI's chat-completions protocol.

``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature", "max_tokens"}``;
the user message holds the instruction (:func:`syngrpo.synthesis.describers.describe_instruction`) and the
image as a ``data:image/png;base64,...`` URL, the form OpenAI's vision models (GPT-4o, the paper's
describer) and vLLM / Ollama / llama.cpp servers accept.  The reply's first choice is read one
description per line (:func:`syngrpo.synthesis.describers.read_descriptions`).

The key comes from the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``), never
from a config file; without it no ``Authorization`` header is sent (local servers need none).

Failures: a refused key (401/403) or a service that cannot be reached or keeps timing out after
``retries`` is a :class:`~syngrpo.synthesis.describers.DescriberError` naming the URL (nothing can work);
429 and 5xx answers are retried with exponential back-off (``Retry-After`` honoured); any other
bad answer for one image gives that image no descriptions and a warning.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
from collections.abc import Sequence
from typing import Any

from syngrpo.synthesis.describers import DescribeRequest, DescriberError, describe_instruction, read_descriptions

log = logging.getLogger("syngrpo.synthesis.describers")

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class ChatCompletionsDescriber:
    """Describes images through an OpenAI-compatible chat-completions endpoint (see the module docstring)."""

    def __init__(self, *, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 120.0, connect_timeout_s: float = 10.0, retries: int = 3,
                 backoff_s: float = 1.0, max_concurrency: int = 4, temperature: float = 1.0,
                 max_tokens: int = 600, max_image_side: int = 1024) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as https://api.openai.com/v1, got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError("model must name the service's model, e.g. gpt-4o")
        if timeout_s <= 0 or connect_timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_concurrency < 1:
            raise ValueError("timeouts must be > 0, retries and backoff_s >= 0, max_concurrency >= 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_concurrency = int(max_concurrency)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.max_image_side = int(max_image_side)

    # ---- the request --------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _data_url(self, image: Any) -> str:
        im = image.convert("RGB")
        side = max(im.size)
        if side > self.max_image_side:  # a describer needs the scene, not every pixel; keeps requests small
            scale = self.max_image_side / side
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def body(self, request: DescribeRequest) -> dict[str, Any]:
        """The JSON body sent for one request (public for tests and debugging)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "messages": [
                {"role": "system", "content": "You write short, concrete scene descriptions for an image generator."},
                {"role": "user", "content": [
                    {"type": "text", "text": describe_instruction(request)},
                    {"type": "image_url", "image_url": {"url": self._data_url(request.image)}},
                ]},
            ],
        }

    # ---- calling the service ------------------------------------------------------------
    def describe(self, requests: Sequence[DescribeRequest]) -> list[list[str]]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._describe_all(list(requests)))
        raise RuntimeError("ChatCompletionsDescriber.describe is synchronous; call it outside an event loop "
                           "(e.g. with asyncio.to_thread)")

    async def _describe_all(self, requests: list[DescribeRequest]) -> list[list[str]]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout_s, connect=self.connect_timeout_s)
        gate = asyncio.Semaphore(self.max_concurrency)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers()) as session:
            async def one(req: DescribeRequest) -> list[str]:
                async with gate:
                    return await self._describe_one(session, req)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _describe_one(self, session: Any, request: DescribeRequest) -> list[str]:
        import aiohttp

        body = self.body(request)
        last, retry_after = "", None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                async with session.post(self.url, json=body) as resp:
                    text = await resp.text()
                    if resp.status in (401, 403):
                        hint = f"; set ${self.api_key_env} to a valid key" if self.api_key_env else ""
                        raise DescriberError(f"the describer service at {self.url} refused the request "
                                             f"(HTTP {resp.status}: {text[:200]}){hint}")
                    if resp.status in _RETRY_STATUS:
                        last = f"HTTP {resp.status}: {text[:200]}"
                        retry_after = resp.headers.get("Retry-After")
                        continue
                    if resp.status != 200:
                        log.warning("describer: %s for sample %s: HTTP %s: %s", self.url, request.sample_id,
                                    resp.status, text[:200])
                        return []
                    return read_descriptions(_content(text), request.n)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}".strip()
        raise DescriberError(f"cannot get descriptions from {self.url} after {self.retries + 1} tries ({last}); "
                             "is the service running and the base_url right? (a slow one needs a larger timeout_s)")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential back-off, or the server's ``Retry-After`` seconds (at most 60)."""
        if retry_after is not None:
            try:
                return min(60.0, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return self.backoff_s * 2 ** (attempt - 1)


def _content(text: str) -> str | None:
    """The first choice's message content of a chat-completions reply, or None."""
    import json

    try:
        data = json.loads(text)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):  # some servers answer with content parts
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else None
