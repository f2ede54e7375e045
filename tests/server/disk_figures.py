"""Disk used by the data server's store over N jobs, with and without collection-deletion (docs/data-server.md).

Regenerate the figures with::

    .venv/bin/python tests/server/disk_figures.py --jobs 500 --image-size 512

A real ``syngrpo serve`` subprocess (default config: procedural synthesizer, box segmenter, one CPU
worker) on 127.0.0.1, and the trainer's own :class:`~syngrpo.synthesis.client.SynthesisClient` over
the ``aiohttp`` transport in asynchronous mode: every step submits one job per sample not already in
flight (``max_in_flight`` samples), then collects what finished.  The images are the REC toy task's,
with Gaussian noise added so that their PNGs weigh what photographs do (a flat toy image compresses
~20x better than a photograph).  The store's size is read from the server's ``/metrics``
(``syngrpo_store_bytes``: job files and database) after every step, and its job files from the disk.
Not collected by pytest (no ``test_`` prefix); ``tests/server/test_retention.py`` asserts the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def files_bytes(data_dir: Path) -> int:
    total = 0
    for root, _, files in os.walk(data_dir / "jobs"):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def photo_like(samples, sigma: float, seed: int = 0) -> None:
    """Add Gaussian noise to each sample's image in place (PNGs about as large as photographs')."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for s in samples:
        with Image.open(s.image) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
        noisy = np.clip(pixels + rng.normal(0, sigma, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(s.image, "PNG")


def run(jobs: int, delete: bool, work: Path, *, in_flight: int, image_size: int, sigma: float) -> dict:
    from syngrpo.config import SynthesisConfig
    from syngrpo.data.pool import DataPool
    from syngrpo.plugins import get_registry
    from syngrpo.synthesis.client import StepSynthesis, SynthesisClient
    from syngrpo.synthesis.server.spawn import start_server_subprocess

    registry = get_registry()
    task = registry.create("tasks", "rec")
    samples = task.make_toy_dataset(work / "data", n=in_flight, split="train", seed=0, image_size=image_size)
    if sigma > 0:
        photo_like(samples, sigma)
    data_dir = work / "store"
    series = []
    with start_server_subprocess(data_dir=data_dir, log_path=work / "server.log") as server:
        transport = registry.create("transports", "aiohttp", urls=[server.url], poll_interval_s=0.05)
        cfg = SynthesisConfig(mode="async", transport="aiohttp", max_in_flight=in_flight, delete_collected=delete)
        client = SynthesisClient(transport, DataPool(samples, seed=0), task, cfg, work / "synth")
        done = step = 0
        peak_store = peak_files = peak_jobs = 0
        t0 = time.perf_counter()
        try:
            while done < jobs:
                step += 1
                report = StepSynthesis()
                client.submit(step, 0, [(s, f"a red brick wall, {step}") for s in samples], report)
                time.sleep(0.05)
                client.collect(report)
                done += report.done
                m = metrics(server.url)
                peak_store = max(peak_store, int(m["syngrpo_store_bytes"]))
                peak_jobs = max(peak_jobs, int(m["syngrpo_store_jobs"]))
                peak_files = max(peak_files, files_bytes(data_dir))
                series.append((done, int(m["syngrpo_store_bytes"]), int(m["syngrpo_store_jobs"])))
        finally:
            client.close()
        time.sleep(0.5)
        m = metrics(server.url)
    return {
        "delete_collected": delete, "jobs_done": done, "seconds": round(time.perf_counter() - t0, 1),
        "store_bytes_end": int(m["syngrpo_store_bytes"]), "store_jobs_end": int(m["syngrpo_store_jobs"]),
        "files_bytes_end": files_bytes(data_dir), "peak_store_bytes": peak_store, "peak_files_bytes": peak_files,
        "peak_store_jobs": peak_jobs, "jobs_deleted": int(m['syngrpo_jobs_deleted_total{reason="client"}']),
        "series": series[:: max(1, len(series) // 10)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=8, help="samples, and max_in_flight")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--noise", type=float, default=12.0, help="Gaussian noise sigma (0: flat toy images)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory(prefix="syngrpo-disk-") as tmp:
        for delete in (False, True):
            out.append(run(args.jobs, delete, Path(tmp) / f"delete-{delete}", in_flight=args.in_flight,
                           image_size=args.image_size, sigma=args.noise))
    mib = 1024 * 1024
    print(f"{args.jobs} jobs, {args.image_size}px images (noise sigma {args.noise:g}), "
          f"max_in_flight {args.in_flight}, procedural synthesizer, one CPU worker")
    print("| delete_collected | jobs done | store at the end | peak store | peak job files | jobs kept at the end "
          "| peak jobs kept |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        print(f"| {str(r['delete_collected']).lower()} | {r['jobs_done']} | {r['store_bytes_end'] / mib:.1f} MiB | "
              f"{r['peak_store_bytes'] / mib:.1f} MiB | {r['peak_files_bytes'] / mib:.1f} MiB | "
              f"{r['store_jobs_end']} | {r['peak_store_jobs']} |")
    keep = out[0]
    print(f"job files per job (input, result, mask): {keep['files_bytes_end'] / max(1, keep['store_jobs_end']) / mib:.2f}"
          f" MiB; store = job files + database (jobs.sqlite3 and its WAL)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
