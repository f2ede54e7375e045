"""Progress of long phases, on a real pseudo-terminal and off it (issue #25).

A terminal gets a tqdm bar; anything else, including a pty that reports 0 columns (where tqdm draws
nothing at all), gets plain lines with the count, the rate and the time left, at least every interval,
also while a single step is slow.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import termios
import time

import pytest

from syngrpo.rundir.progress import INTERVAL_ENV, Progress, default_interval, draws_bars, phase
from syngrpo.rundir.runlog import RunLog


@pytest.fixture
def terminal():
    """A real pty: ``(writer, read_all, set_columns)``; the writer is what the program writes to."""
    master, slave = pty.openpty()
    writer = os.fdopen(slave, "w", buffering=1)
    os.set_blocking(master, False)

    def set_columns(cols: int, rows: int = 24) -> None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_all() -> str:
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    yield writer, read_all, set_columns
    writer.close()
    os.close(master)


def test_plain_lines_say_count_rate_and_time_left():
    out = io.StringIO()
    with Progress("sft", 8, interval_s=0.05, stream=out) as p:
        for _ in range(8):
            time.sleep(0.02)
            p.update(1, {"loss": 1.23456})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sft: 0/8 steps (0 %)")
    middle = [line for line in lines if "ETA" in line]
    assert middle and re.search(r"\d+\.\d\d (step/s|s/step), ETA \d+:\d\d  loss=1\.23$", middle[0]), lines
    assert re.match(r"sft: 8/8 steps \(100 %\), done in \d+:\d\d, ", lines[-1]), lines


def test_a_slow_step_still_gets_a_line_every_interval():
    """The heartbeat: one step that takes 10 intervals writes lines while it runs, not only after."""
    out = io.StringIO()
    with Progress("vision pre-training", 3, interval_s=0.1, stream=out) as p:
        time.sleep(1.0)
        p.update(1)
    lines = out.getvalue().splitlines()
    during = [line for line in lines if line.startswith("vision pre-training: 0/3") and "first step running" in line]
    assert len(during) >= 4, lines


def test_a_pty_without_columns_gets_plain_lines_not_an_invisible_bar(terminal):
    writer, read_all, set_columns = terminal
    set_columns(0)
    assert writer.isatty() and not draws_bars(writer)
    with Progress("eval at step 0", 4, unit="sample", interval_s=0.05, stream=writer) as p:
        time.sleep(0.1)
        p.update(2)
    text = read_all()
    assert "eval at step 0: 0/4 samples (0 %)" in text and "eval at step 0: 2/4 samples (50 %), done in" in text, text


def test_a_terminal_with_columns_gets_a_bar(terminal):
    writer, read_all, set_columns = terminal
    set_columns(100)
    assert draws_bars(writer)
    with Progress("sft", 4, stream=writer) as p:
        time.sleep(0.15)  # beyond tqdm's redraw throttle
        p.update(4)
    text = read_all()
    assert "4/4" in text and "|" in text and "ETA" not in text  # tqdm's bar, not a plain line


def test_the_step_bar_shows_this_steps_numbers_not_the_last_ones(terminal, tmp_path, monkeypatch):
    """The bar's postfix lagged one step: the bar redrew on update(), then the new numbers were set without a
    redraw, so step N showed step N-1's reward."""
    writer, read_all, set_columns = terminal
    set_columns(160)
    monkeypatch.setattr("sys.stderr", writer)
    rl = RunLog(tmp_path, total_steps=3, tensorboard=False, plots=False, gallery=False)
    rl.start_steps()
    for step, reward in ((1, 0.111), (2, 0.222)):
        time.sleep(0.15)  # beyond tqdm's redraw throttle
        rl.log(step, {"reward/total": reward})
        drawn = read_all().split("\r")[-1]
        assert f"{step}/3" in drawn and f"r={reward:.3g}" in drawn, drawn
    rl.close()


def test_the_runlog_off_a_terminal_writes_steps_with_rate_and_eta(tmp_path, capsys):
    rl = RunLog(tmp_path, total_steps=2, tensorboard=False, plots=False, gallery=False, progress_interval_s=60)
    rl.log(1, {"reward/total": 1.0})
    rl.log(2, {"reward/total": 1.2})
    rl.close()
    err = capsys.readouterr().err
    assert re.search(r"syn-grpo: 1/2 steps \(50 %\), .*ETA \d+:\d\d  reward/total=1\b", err), err
    assert "syn-grpo: 2/2 steps (100 %)" in err and "reward/total=1.2" in err


def test_a_short_phase_says_nothing_and_a_long_one_says_how_long():
    out = io.StringIO()
    with phase("writing the checkpoint of step 12", interval_s=0.3, stream=out):
        time.sleep(0.05)
    assert out.getvalue() == ""
    with phase("writing the checkpoint of step 24", interval_s=0.1, stream=out):
        time.sleep(0.5)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("writing the checkpoint of step 24: 0:00 elapsed")
    assert re.match(r"writing the checkpoint of step 24: done in \d+:\d\d$", lines[-1]), lines


def test_an_inner_phase_silences_the_enclosing_heartbeat():
    """During an evaluation inside the step loop only the evaluation reports, not 'first step running'."""
    out = io.StringIO()
    outer = Progress("syn-grpo", 36, interval_s=0.1, stream=out, announce=False)
    with Progress("eval at step 0", 96, unit="sample", interval_s=0.1, stream=out):
        time.sleep(0.6)
    outer.close()
    during = out.getvalue().split("eval at step 0: 0/96 samples (0 %), done in")[0]
    assert "syn-grpo" not in during and during.count("eval at step 0") >= 3, out.getvalue()


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert default_interval() == 2.5
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    assert default_interval() == 15.0


def test_the_runlog_on_a_pty_without_columns_writes_plain_step_lines(terminal, tmp_path, monkeypatch):
    """A pty with 0 columns is a tty: the step bar was chosen, tqdm drew nothing, and no plain line came."""
    writer, read_all, set_columns = terminal
    set_columns(0)
    monkeypatch.setattr("sys.stderr", writer)
    rl = RunLog(tmp_path, total_steps=2, tensorboard=False, plots=False, gallery=False)
    rl.log(1, {"reward/total": 0.5})
    rl.log(2, {"reward/total": 0.75})
    rl.close()
    text = read_all()
    assert "syn-grpo: 2/2 steps (100 %)" in text and "reward/total=0.75" in text, text
