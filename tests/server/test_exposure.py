"""Issue 24 item 9 (the server's part): what a server reachable from the network gives away.

A token that guards a network address must resist guessing (``password`` was accepted), and a
client without the token learns only whether the server is up: ``/healthz`` used to show worker
errors (exception texts, device names, paths) to anyone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from syngrpo.errors import ConfigError
from syngrpo.synthesis.server.app import create_app
from syngrpo.synthesis.server.config import check_bind_security

from .support import Control, ControlledPlugin

STRONG = "k3J9-qzL0_vT7xWp2mNc"


@pytest.mark.parametrize("weak", ["password", "passwordpassword", "aaaaaaaaaaaaaaaaaaaa", "abcabcabcabcabcabc",
                                  "12345678901"])
def test_a_weak_token_is_refused_for_a_network_address_and_the_message_says_how_to_make_one(weak):
    with pytest.raises(ConfigError) as info:
        check_bind_security("0.0.0.0", weak)
    assert "weak token" in str(info.value) and "secrets.token_urlsafe" in str(info.value)
    check_bind_security("127.0.0.1", weak)  # loopback: only this machine can guess, the 8-character rule holds
    check_bind_security("0.0.0.0", STRONG)


def test_syngrpo_serve_refuses_to_bind_a_network_address_with_password_as_its_token(tmp_path):
    env = {**os.environ, "SYNGRPO_SERVER_TOKEN": "password"}
    proc = subprocess.run([sys.executable, "-m", "syngrpo.synthesis.server", "--host", "0.0.0.0", "--port", "0",
                           "--data-dir", str(tmp_path / "store")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "weak token" in proc.stderr and "16" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_healthz_without_the_token_says_only_up_or_down(aiohttp_client, config_for):
    control = Control(fail_create=True)  # the worker cannot load: its error names the failure
    from syngrpo.plugins import get_registry

    registry = get_registry([ControlledPlugin(control)])
    cfg = config_for(synthesizer="controlled", token=STRONG, workers=["cpu", "cpu"])
    client = await aiohttp_client(create_app(cfg, registry=registry))
    import asyncio

    for _ in range(200):  # both workers fail to load
        full = await (await client.get("/healthz", headers={"Authorization": f"Bearer {STRONG}"})).json()
        if all(w["state"] == "broken" for w in full["workers"]):
            break
        await asyncio.sleep(0.02)
    anonymous = await client.get("/healthz")
    assert anonymous.status == 503
    assert await anonymous.json() == {"status": "broken"}  # nothing else: no errors, no devices, no version
    wrong = await client.get("/healthz", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert await wrong.json() == {"status": "broken"}
    assert "model weights not found" in full["workers"][0]["error"]  # the operator, with the token, sees why
    assert "version" in full


async def test_healthz_of_a_server_without_a_token_keeps_its_full_answer(aiohttp_client, config_for):
    client = await aiohttp_client(create_app(config_for()))  # loopback, no token: everything is the operator's
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "ok" and "workers" in body and "queue_depth" in body
