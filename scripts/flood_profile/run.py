"""Where an innocent client's request time goes while a flood runs: a profiling tool, not a benchmark.

    python scripts/flood_profile/run.py OUT_DIR N [none] [cheap] [heavy] [--set key=value ...]

Starts ``syngrpo serve`` under :mod:`probe_server` (per-callback timing of its event loop, a loop-lag
probe, the innocent client's handler times; ``PROBE_PROFILE=1`` adds a cProfile of the loop thread
during the ``heavy`` scenario, ``OUT_DIR/server.json.prof``) on the second core, the clients of
``tests/benchmarks/floods.py`` on the first, with the benchmark's limits; runs N innocent jobs per
scenario and prints the innocent's request times and, per scenario, the loop's lag and its slowest
callbacks.  ``PROBE_SWITCH=0.0005`` sets the server's interpreter switch interval,
``PROBE_RENICE=10`` renices the server's children (worker processes) after start.  What it measured for
issue 24 is in docs/data-server.md ("Clients, shares and fairness").
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.floods import delete_keys, flood_process, innocent_round  # noqa: E402
from benchmarks.support import server_env, wait_idle  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))] if s else float("nan")


def report(out: str) -> None:
    d = json.load(open(out + "/server.json"))
    for ph in sorted({k.split("|")[0] for k in d["cb"]} | {p for p, _ in d["lag"]}):
        lag = [x for p, x in d["lag"] if p == ph]
        inn = [t for p, _m, _path, t in d["inn"] if p == ph]
        print(f"== {ph}: loop lag p50 {1e3 * pct(lag, 50):.1f} p99 {1e3 * pct(lag, 99):.1f} ms (n={len(lag)}); "
              f"innocent handler p50 {1e3 * pct(inn, 50):.1f} p99 {1e3 * pct(inn, 99):.1f} ms (n={len(inn)})")
        rows = sorted(((v[1], k.split("|", 1)[1], v) for k, v in d["cb"].items() if k.startswith(ph + "|")),
                      reverse=True)[:10]
        for tot, name, v in rows:
            print(f"   {tot * 1e3:8.0f} ms in {v[0]:6d} callbacks over 0.5 ms, longest {v[2] * 1e3:6.1f} ms  {name}")


def main() -> None:
    out, n = sys.argv[1], int(sys.argv[2])
    args = sys.argv[3:]
    scenarios = [a for a in args if a in ("none", "cheap", "heavy")]
    extra = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    os.makedirs(out, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    env = server_env()
    env.update({k: v for k, v in os.environ.items() if k.startswith("PROBE_")})
    env["PROBE_OUT"] = out + "/server.json"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}"
    ready = out + "/ready.json"
    if os.path.exists(ready):
        os.remove(ready)
    sets = ['synthesizer="procedural"', "workers=1", "queue_size=16", 'scheduling="fair"', "body_timeout_s=10.0",
            f"max_request_bytes={8 * 1024 * 1024}", f"max_body_bytes_in_flight={32 * 1024 * 1024}", *extra]
    cmd = ["taskset", "-c", str(cpus[-1]), sys.executable, str(Path(__file__).with_name("probe_server.py")),
           "--host", "127.0.0.1", "--port", "0", "--ready-file", ready, "--data-dir", out + "/data"]
    for item in sets:
        cmd += ["--set", item]
    with open(out + "/server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    while not os.path.exists(ready):
        time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(open(out + "/server.log").read())
    if os.environ.get("PROBE_RENICE"):
        time.sleep(2)
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        for k in kids:
            subprocess.run(["renice", "-n", os.environ["PROBE_RENICE"], "-p", k], capture_output=True)
    info = json.load(open(ready))
    url, port = info["url"], info["port"]

    def phase(p: str) -> None:
        urllib.request.urlopen(url + "/probe/phase?p=" + p).read()  # noqa: S310 - loopback

    results = {}
    try:
        for sc in scenarios:
            phase(sc)
            ctx = multiprocessing.get_context("spawn")
            stop, q = ctx.Event(), ctx.Queue()
            p = None
            if sc != "none":
                opts = ({"size": 768, "bomb_bytes": 7 * 1024 * 1024, "max_request_bytes": 8 * 1024 * 1024}
                        if sc == "heavy" else {})
                p = ctx.Process(target=flood_process, args=(sc, url, port, stop, q, opts), daemon=True)
                p.start()
                time.sleep(3)
            load0 = os.getloadavg()[0]
            st = asyncio.run(innocent_round(url, n, sc))
            stop.set()
            counts = q.get(timeout=180) if p else {"keys": [], "statuses": {}}
            if p:
                p.join(30)
            asyncio.run(delete_keys(url, counts["keys"]))
            phase("idle-" + sc)
            wait_idle(url, 300)
            r = st.request_s
            results[sc] = {"p50_ms": 1e3 * pct(r, 50), "p90_ms": 1e3 * pct(r, 90), "p99_ms": 1e3 * pct(r, 99),
                           "max_ms": 1e3 * max(r), "requests": len(r), "load": (load0, os.getloadavg()[0]),
                           "flood": counts["statuses"]}
            print(sc, json.dumps(results[sc]), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    json.dump(results, open(out + "/client.json", "w"))
    report(out)


if __name__ == "__main__":
    main()
