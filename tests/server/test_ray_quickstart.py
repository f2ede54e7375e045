"""The quickstart with its data server on Ray (issue 28's "done means"; slow: a few CPU-minutes).

The README's command, ``syngrpo train`` with the shipped quickstart config, plus one config key:
``synthesis.server.backend: ray`` with ``backend_options.address`` naming a running cluster.  The run spawns
``syngrpo serve --backend ray`` (a coordinator actor on the cluster, procedural replicas as Ray actors) and talks
HTTP to its front like to any spawned server.  The cluster is a real one on 127.0.0.1 (2 CPUs), joined by its
loopback address the way a user types it: the run's environment does not carry Ray's loopback switch (the
plugin sets it, :mod:`syngrpo_ray.address`).

Asserted: the run learns as the plain quickstart does (tests/trainer/test_quickstart.py: the same bars), its
synthesized images came from Ray replicas, and the run leaves nothing of its server on the cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from syngrpo.rundir.runlog import read_jsonl

if importlib.util.find_spec("ray") is None:  # not importorskip: importing Ray here would decide its loopback rule
    pytest.skip("Ray is not installed (extra 'ray': pip install 'syngrpo[ray]')", allow_module_level=True)

pytestmark = pytest.mark.slow

LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from syngrpo_ray.cluster import LocalCluster

    tmp = tmp_path_factory.mktemp("quickstart-ray")
    cluster = LocalCluster(num_cpus=2)
    cluster.start()
    try:
        options = {"address": cluster.address, "replica_num_cpus": 0.5, "min_replicas": 1, "max_replicas": 2}
        env = {k: v for k, v in os.environ.items() if k not in (LOOPBACK_SWITCH, "RAY_ADDRESS")}
        env.update(SYNGRPO_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
        proc = subprocess.run(
            [sys.executable, "-m", "syngrpo.cli", "train", "--out", str(tmp / "run"),
             "--set", "synthesis.server.backend=ray",
             "--set", "synthesis.server.backend_options=" + json.dumps(options)],
            env=env, capture_output=True, text=True, timeout=1800)
        leftovers = _named_actors(cluster.address)
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return tmp / "run", proc, leftovers


_PROBE = """
import json, time, ray
from ray.util import list_named_actors
ray.init(address=%r, logging_level="ERROR")
deadline = time.monotonic() + 60  # a killed actor's resources come back a moment later
while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
    time.sleep(0.5)
busy = ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0)
print(json.dumps([a["name"] for a in list_named_actors(all_namespaces=True)] + (["cpus held: %%s" %% busy] if busy else [])))
"""


def _named_actors(address: str) -> list[str]:
    """The cluster's live named actors, and the CPUs its actors still hold (a separate driver: this process
    never imports Ray)."""
    probe = _PROBE
    out = subprocess.run([sys.executable, "-c", probe % address], capture_output=True, text=True, timeout=180,
                         env={**os.environ, LOOPBACK_SWITCH: "0", "RAY_USAGE_STATS_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_quickstart_on_ray_learns_as_it_does_on_the_local_server(run):
    path, proc, _ = run
    records = read_jsonl(path / "metrics.jsonl")
    assert records[-1]["step"] == 36 and records[-1]["pool/synthesized_fraction"] > 0
    before, after = records[0]["eval/acc@0.5"], records[-1]["eval/acc@0.5"]
    assert after >= 0.3 and after >= before, (before, after)
    totals = [r["reward/total"] for r in records if r["step"] > 0 and "reward/total" in r]
    assert sum(totals[-9:]) >= sum(totals[:9]), totals
    assert (path / "summary.md").is_file() and (path / "gallery.html").is_file()


def test_its_images_came_from_ray_replicas_and_nothing_of_it_stays_on_the_cluster(run):
    path, proc, leftovers = run
    logs = "\n".join(p.read_text(errors="replace") for p in path.rglob("*.log"))
    assert "(ray backend) listening on" in logs, sorted(str(p) for p in path.rglob("*.log"))
    assert leftovers == [], leftovers  # the coordinator (and with it its replicas) went with the run
