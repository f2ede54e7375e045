"""``syngrpo data sample``: the paper's seeded training sets, and a held-out test set that is the benchmark's.

The 3D-FRONT recipe of docs/data.md draws the 500 rooms the ``3dfront_isr`` benchmark tests on, then 2,000
training rooms from the rest.  The benchmark keeps VLM-R1's rule (shuffle with the seed, keep the head),
which picks other records than ``random.Random(seed).sample``: with the wrong rule the "held-out" rooms
would be trained on.
"""

from __future__ import annotations

import json
import random

from syngrpo.data.files import read_records, write_jsonl
from syngrpo.plugins import get_registry
from syngrpo.train.benchmark import get_benchmark
from syngrpo.types import Sample


def _pool(path, n=40):
    write_jsonl([{"id": f"room-{i}", "image": f"img/{i}.png", "problem": "find the furniture",
                  "solution": [], "width": 8, "height": 8} for i in range(n)], path)
    return [f"room-{i}" for i in range(n)]


def test_sample_draws_with_random_sample_and_prints_its_recipe(tmp_path, cli):
    ids = _pool(tmp_path / "all.jsonl")
    code, out, err = cli("data", "sample", tmp_path / "all.jsonl", "-n", "5", "--seed", "7", "--out", tmp_path / "s.jsonl")
    assert code == 0, err
    assert [r["id"] for r in read_records(tmp_path / "s.jsonl")] == random.Random(7).sample(ids, 5)
    assert json.loads(out.splitlines()[-1])["rule"] == "random_sample"


def test_the_held_out_set_is_the_benchmarks_subset_and_training_never_sees_it(tmp_path, cli):
    ids = _pool(tmp_path / "all.jsonl", n=40)
    code, _, err = cli("data", "sample", tmp_path / "all.jsonl", "-n", "10", "--seed", "42", "--rule", "shuffled_head",
                       "--out", tmp_path / "test.jsonl")
    assert code == 0, err
    bench = get_benchmark(get_registry(), "3dfront_isr")
    samples = [Sample(id=i, task="isr", image="x.png", problem="p", solution=[], width=8, height=8) for i in ids]
    held_out = [r["id"] for r in read_records(tmp_path / "test.jsonl")]
    assert held_out == [s.id for s in bench.select(samples, limit=10)]  # its 500 of a real copy, scaled to 40
    code, _, err = cli("data", "sample", tmp_path / "all.jsonl", "-n", "30", "--seed", "42",
                       "--exclude", tmp_path / "test.jsonl", "--out", tmp_path / "train.jsonl")
    assert code == 0, err
    train = [r["id"] for r in read_records(tmp_path / "train.jsonl")]
    assert len(train) == 30 and not set(train) & set(held_out)


def test_an_unknown_rule_is_refused_by_the_parser(tmp_path, cli, capsys):
    _pool(tmp_path / "all.jsonl")
    try:
        cli("data", "sample", tmp_path / "all.jsonl", "-n", "3", "--rule", "first", "--out", tmp_path / "s.jsonl")
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("--rule first must be refused")
