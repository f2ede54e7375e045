"""Faults at the process and connection level, with real ``syngrpo serve`` subprocesses on 127.0.0.1:
a store held by one server only, a spawned server that dies with its parent and is restarted when
it dies alone, stalled connections dropped, parser refusals in JSON, bad tokens and stores refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from syngrpo.cli import main
from syngrpo.synthesis.server.spawn import ServerStartError, start_server_subprocess, start_supervised_server
from syngrpo.synthesis.server.store import JobStore, StoreError
from syngrpo.testing import process_alive


def _get(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")




def _wait(predicate, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``predicate()`` held; AssertionError after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(step)
    return time.monotonic() - t0


# ----------------------------------------------------------------------------- one store, one server


def test_a_second_job_store_on_the_same_directory_is_refused_with_the_holders_pid(tmp_path):
    first = JobStore(tmp_path / "store")
    try:
        with pytest.raises(StoreError, match=rf"in use by another data server \(pid {os.getpid()}\)"):
            JobStore(tmp_path / "store")
    finally:
        first.close()
    JobStore(tmp_path / "store").close()  # free again once the first one closed


def test_a_second_server_on_the_same_store_refuses_to_start(tmp_path):
    with start_server_subprocess(data_dir=tmp_path / "store") as first:
        with pytest.raises(ServerStartError, match="in use by another data server"):
            start_server_subprocess(data_dir=tmp_path / "store", log_path=tmp_path / "second.log",
                                    startup_timeout_s=30)
        assert _get(first.url + "/healthz")[0] == 200


def test_an_unwritable_store_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["serve", "--port", "0", "--data-dir", str(blocker / "store")]) == 2
    err = capsys.readouterr().err
    assert "cannot use" in err and "writable directory" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("token", ["abc", " " * 8, "has a space in it"])
def test_a_bad_token_from_the_environment_is_refused_like_one_from_a_config(tmp_path, token):
    env = {**os.environ, "SYNGRPO_SERVER_TOKEN": token}
    proc = subprocess.run([sys.executable, "-m", "syngrpo.synthesis.server", "--host", "0.0.0.0", "--port", "0",
                           "--data-dir", str(tmp_path / "store")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "SYNGRPO_SERVER_TOKEN" in proc.stderr and "token must" in proc.stderr


def test_one_rule_for_tokens_whatever_their_source(monkeypatch):
    from syngrpo.errors import ConfigError
    from syngrpo.plugins import get_registry
    from syngrpo.synthesis.server.config import ServerConfig, resolve_token

    for bad in ("abc", " " * 8, "tab\tinside-it"):
        with pytest.raises(ValueError, match="token must"):
            ServerConfig(token=bad)
        monkeypatch.setenv("SYNGRPO_SERVER_TOKEN", bad)
        with pytest.raises(ConfigError, match="token must"):
            ServerConfig().with_env_token()
        with pytest.raises(ConfigError, match="synthesis.token"):
            resolve_token(bad, "synthesis.token")
        with pytest.raises(ConfigError, match="token must"):  # the trainer's client: the same rule
            get_registry().create("transports", "aiohttp", urls=["http://127.0.0.1:9"])
    monkeypatch.setenv("SYNGRPO_SERVER_TOKEN", "a-good-token-123")
    assert ServerConfig().with_env_token().token == "a-good-token-123"


# ----------------------------------------------------------------------------- connections


@pytest.fixture
def quick_server(tmp_path):
    with start_server_subprocess(data_dir=tmp_path / "store", overrides=["read_timeout_s=1", "body_timeout_s=1"]) as handle:
        yield handle


def _closed_within(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent before closing ``sock`` (AssertionError if it kept it open)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {timeout} s") from None
    finally:
        sock.close()


def test_stalled_connections_are_dropped_after_the_read_timeout_and_disconnects_log_quietly(quick_server):
    host, port = quick_server.host, quick_server.port
    silent = socket.create_connection((host, port))  # connects, sends nothing
    partial = socket.create_connection((host, port))
    partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    body = socket.create_connection((host, port))
    body.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5000\r\n\r\n{\"key\": ")  # body never finished
    t0 = time.monotonic()
    assert _closed_within(silent, 6) == b""
    assert _closed_within(partial, 6) == b""
    answer = _closed_within(body, 6)
    assert time.monotonic() - t0 < 6
    assert b" 408 " in answer.split(b"\r\n")[0] and b'"request_timeout"' in answer
    for _ in range(20):  # clients that go away mid-body
        s = socket.create_connection((host, port))
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"key\": \"x\"")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.close()
    time.sleep(0.5)
    assert _get(quick_server.url + "/healthz")[0] == 200
    log = quick_server.log_tail(100_000)
    assert "Traceback" not in log and " ERROR " not in log


def test_clients_that_disconnect_mid_request_are_logged_quietly(tmp_path):
    with start_server_subprocess(data_dir=tmp_path / "store") as server:
        for _ in range(20):
            s = socket.create_connection((server.host, server.port))
            s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"key\": \"x\"")
            time.sleep(0.02)  # the handler is reading the body when the client goes
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            s.close()
        time.sleep(0.5)
        assert _get(server.url + "/healthz")[0] == 200
        log = server.log_tail(100_000)
    assert "Traceback" not in log and " ERROR " not in log, log[-2000:]


def test_aiohttp_parser_refusals_are_json_and_name_the_post_alternative(quick_server):
    ids = ",".join(f"{i:032x}" for i in range(300))  # ~10 kB of URL: beyond aiohttp's line limit
    status, body = _get(f"{quick_server.url}/v1/jobs?ids={ids}")
    assert status in (400, 414) and body["error"]["code"] in ("bad_request", "uri_too_long")
    assert "POST /v1/jobs/query" in body["error"]["message"]
    raw = socket.create_connection((quick_server.host, quick_server.port))
    raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
    answer = _closed_within(raw, 5)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b" 400 " in head.split(b"\r\n")[0] and b"application/json" in head
    assert json.loads(payload)["error"]["code"] == "bad_request"


# ----------------------------------------------------------------------------- spawned servers and their trainer


_TRAINER = textwrap.dedent("""
    import sys, time
    from syngrpo.synthesis.server.spawn import start_server_subprocess
    handle = start_server_subprocess(data_dir=sys.argv[1])
    print(handle.pid, flush=True)
    time.sleep(120)
""")


def test_a_spawned_server_exits_within_10_s_when_its_trainer_is_killed(tmp_path):
    trainer = subprocess.Popen([sys.executable, "-c", _TRAINER, str(tmp_path / "store")], stdout=subprocess.PIPE,
                               text=True)
    try:
        server_pid = int(trainer.stdout.readline())
        assert process_alive(server_pid)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        took = _wait(lambda: not process_alive(server_pid), timeout=10)
    finally:
        trainer.kill()
    assert took < 10
    # its store is free again: a new server (the resumed trainer's) takes it
    with start_server_subprocess(data_dir=tmp_path / "store") as again:
        assert _get(again.url + "/healthz")[0] == 200


def test_a_spawned_server_that_dies_is_restarted_on_the_same_url_within_30_s(tmp_path):
    with start_supervised_server(data_dir=tmp_path / "store", check_interval_s=0.2, backoff_s=0.5) as server:
        url, first_pid = server.url, server.pid
        server.kill()
        took = _wait(lambda: server.restarts == 1 and server.alive(), timeout=30)
        assert server.url == url and server.pid != first_pid
        assert _get(url + "/healthz")[0] == 200
        events = server.drain_events()
        assert any("exited" in e for e in events) and any("restarted" in e for e in events)
    assert took < 30
    assert not process_alive(server.pid)


def test_the_store_lock_is_released_when_its_server_is_sigkilled(tmp_path):
    handle = start_server_subprocess(data_dir=tmp_path / "store")
    handle.kill()
    store = JobStore(Path(tmp_path / "store"))
    store.close()
