"""``scripts/gpu-check``'s plumbing: the plugin list a bare checkout loads, and the table it prints.

The check itself runs in CI as ``scripts/gpu-check --cpu-smoke`` (``.ci/run``); these tests keep the parts that
only a GPU machine's bare checkout exercises from drifting.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bare_checkout_loads_the_same_plugin_modules_as_the_installed_entry_points():
    modules = _gpu_check().entry_point_modules()
    installed = {ep.value for ep in entry_points(group="syngrpo")}
    assert len(modules) >= 12 and "syngrpo_sdxl.plugin" in modules and "syngrpo.synthesis.server.inprocess" in modules
    assert set(modules) <= installed


def test_markdown_table_shows_every_part_with_its_figures_or_why():
    figures = {
        "device": "NVIDIA H100 80GB HBM3", "mode": "gpu", "torch": "2.11", "transformers": "5.17", "diffusers": "0.42.1",
        "total_seconds": 300.0,
        "parts": {
            "policy_hf": {"status": "ok", "peak_gib": 41.5, "plan_peak_gib": 44.0, "sampled_tokens_per_s": 900.0},
            "policy_fsdp": {"status": "not available", "why": "no FSDP"},
            "sdxl": {"status": "failed", "error": "OutOfMemoryError: x | y"},
            "sam": {"status": "skipped", "why": "10 s of the time budget left"},
        },
    }
    table = _gpu_check().markdown(figures)
    assert "**NVIDIA H100 80GB HBM3**" in table
    assert "| policy_hf | ok | peak_gib 41.5, plan_peak_gib 44.0, sampled_tokens_per_s 900.0 |" in table
    assert "| policy_fsdp | not available | no FSDP |" in table
    assert "| sdxl | failed | OutOfMemoryError: x / y |" in table
    assert "| sam | skipped | 10 s of the time budget left |" in table


def test_a_quickstart_stopped_at_its_time_limit_is_a_failed_part_that_keeps_its_log(tmp_path):
    gpu_check = _gpu_check()
    out = tmp_path / "out"
    result = gpu_check.quickstart_check(gpu_check.sizes(smoke=True), tmp_path, out, timeout_s=0.5)
    assert result["status"] == "failed" and result["error"].startswith("timed out after 0 s")
    assert (out / "quickstart.log").is_file()
