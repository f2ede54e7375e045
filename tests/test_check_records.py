"""``syngrpo check`` on the records issue #24 found it let through or refused wholesale.

* A 260 KB referring expression passed the check, then the run grew past 6 GiB in 21 s: texts are
  bounded (``data.max_text_chars``), per field, with file and record named.
* ``data.bad_samples: drop`` refused the whole dataset, naming no record, for a missing or undecodable
  image (no width/height in the record, so the reader opens it), an image above PIL's decompression-bomb
  limit and a NaN box: each is now one dropped record with a line naming file and line, and a total; with
  ``error`` every one of them is listed, not the first alone.
* A synthesizer that only the spawned data server's own ``plugins:`` provides was refused by the check:
  the check now loads those plugins as the server does.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from syngrpo.cli import main
from syngrpo.config import load_train_config
from syngrpo.train.preflight import check_config

LONG = "the man on the left " * 13_000  # 260 KB


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A REC JSONL file: good records on lines 1 and 7, one bad record of each kind on lines 2-6."""
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "good.png")
    Image.new("RGB", (96, 96), (10, 200, 10)).save(tmp_path / "huge.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png body")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)  # so that a 96 x 96 image is a decompression bomb
    rows = [
        {"image": "good.png", "solution": [4, 4, 30, 30], "normal_caption": "the red square"},
        {"image": "missing.png", "solution": [4, 4, 30, 30], "normal_caption": "a missing image"},
        {"image": "corrupt.png", "solution": [4, 4, 30, 30], "normal_caption": "an undecodable image"},
        {"image": "huge.png", "solution": [4, 4, 30, 30], "normal_caption": "a huge image"},
        {"image": "good.png", "solution": [float("nan"), 4, 30, 30], "normal_caption": "a NaN box"},
        {"image": "good.png", "solution": [4, 4, 30, 30], "normal_caption": LONG},
        {"image": "good.png", "solution": [8, 8, 40, 40], "normal_caption": "the red square again"},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")  # NaN as JSON's non-standard literal
    return path


def _config(tmp_path) -> str:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model:\n  policy: /nonexistent/policy\ndata:\n  task: rec\nsynthesis:\n  mode: off\n")
    return str(cfg)


WHY = {2: "missing.png does not exist", 3: "cannot identify image file", 4: "decompression", 5: "no readable box",
       6: "problem is 260,000 characters, above data.max_text_chars (4,096)"}


def test_check_names_every_bad_record_by_file_and_line_not_only_the_first(tmp_path, dataset, capsys):
    code = main(["check", "-c", _config(tmp_path), "--set", f"data.train={dataset}"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.splitlines()
    for line, why in WHY.items():
        assert any(f"{dataset} line {line}: " in x and why in x for x in lines), (line, why, err)
    assert "5 bad sample(s) of 7" in err
    assert f"{dataset} line 1:" not in err and f"{dataset} line 7:" not in err


def test_drop_leaves_out_exactly_the_bad_records_one_line_each_and_a_total(tmp_path, dataset, capsys):
    code = main(["check", "-c", _config(tmp_path), "--set", f"data.train={dataset}", "--set", "data.bad_samples=drop"])
    out = capsys.readouterr().out
    assert code == 0, out
    dropped = [x for x in out.splitlines() if "dropped " in x and f"{dataset} line" in x]
    assert [int(x.split(f"{dataset} line ")[1].split(":")[0]) for x in dropped] == sorted(WHY)
    for line, why in WHY.items():
        assert why in dropped[sorted(WHY).index(line)]
    assert "dropped 5 of 7 samples" in out
    cfg = load_train_config(_config(tmp_path), [f"data.train={dataset}", "data.bad_samples=drop"])
    report = check_config(cfg)
    from syngrpo.plugins import get_registry

    task = get_registry().create("tasks", "rec")
    kept = report.load(lambda: task.load(dataset), "train")
    assert [s.problem for s in kept] == ["the red square", "the red square again"]
    assert [s.id for s in kept] == ["train-0", "train-6"], "ids keep the record's place"


def test_the_text_bound_is_a_setting(tmp_path, dataset):
    cfg = load_train_config(_config(tmp_path), [f"data.train={dataset}", "data.bad_samples=drop",
                                                "data.max_text_chars=300000"])
    assert len(check_config(cfg).drops) == 4 + 1  # the long expression is kept now


PLUGIN = '''
from syngrpo.hookspecs import hookimpl


class OnlyOnServer:
    def __init__(self, **options):
        self.options = options

    def __call__(self, requests):
        return [r.image for r in requests]


@hookimpl
def register_synthesizers(register):
    register("only_on_server", OnlyOnServer)
'''


def test_check_looks_up_the_spawned_servers_synthesizer_among_that_servers_own_plugins(tmp_path):
    plugin = tmp_path / "server_only_synth.py"
    plugin.write_text(PLUGIN)
    base = ["synthesis.mode=async", "synthesis.spawn_server=true"]
    cfg = load_train_config(_config(tmp_path), [*base, f"synthesis.server={{synthesizer: only_on_server, plugins: "
                                                       f"['{plugin}']}}"])
    report = check_config(cfg, data=False)
    assert report.errors == [], report.errors
    assert any("plugins" in n and "server_only_synth.py" in n for n in report.notes)
    server_config = tmp_path / "server.yaml"  # the same through the spawned server's own config file
    server_config.write_text(f"synthesizer: only_on_server\nplugins: ['{plugin}']\n")
    cfg = load_train_config(_config(tmp_path), [*base, f"synthesis.server_config={server_config}"])
    assert check_config(cfg, data=False).errors == []
    cfg = load_train_config(_config(tmp_path), [*base, "synthesis.server={synthesizer: only_on_server}"])
    assert any("only_on_server" in e for e in check_config(cfg, data=False).errors), "without the plugin: refused"
    cfg = load_train_config(_config(tmp_path), [*base, "synthesis.server={plugins: [/nonexistent/p.py]}"])
    assert any("synthesis.server.plugins" in e and "/nonexistent/p.py" in e
               for e in check_config(cfg, data=False).errors)
