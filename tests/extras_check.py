"""What each optional extra is for, exercised in an environment that holds the core and that extra alone.

``tests/test_extras.py`` (slow, CI) installs ``syngrpo[EXTRA]`` with the CI lock into an environment of its
own and runs ``python tests/extras_check.py EXTRA WORKDIR`` there.  Each check goes through the door a user
goes through -- the plugin's factory, with its lazy ``require(...)`` of the heavy library -- on tiny models
built offline, so an extra that forgets a package its plugin imports fails here, not on a user's first run.

This file imports nothing beyond the core at module level: it runs where only one extra is installed.

``vllm`` has no check: it is CUDA only, pins its own torch, and is never installed on a CPU machine.
``dev`` is the test environment itself (``scripts/test`` runs the whole suite in it).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Every top-level module BEN2's own code imports (PramaLLC/BEN2, src/ben2/modeling_ben2.py and auto.py,
#: read at commit 41efc69), beyond the standard library, and what provides it here.  BEN2's requirements.txt
#: lists all of them but cv2, which is why the ``ben2`` extra carries opencv-python-headless.
BEN2_IMPORTS = {
    "torch": "core",  # syngrpo's own dependency
    "numpy": "core",
    "PIL": "core",
    "huggingface_hub": "transformers",  # transformers depends on it
    "torchvision": "yours",  # the build for your torch: PyPI's is built for CUDA torch (docs/data-server.md)
    "timm": "ben2",
    "einops": "ben2",
    "cv2": "ben2",
}


def _tiny_scene():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), (200, 200, 200))
    ImageDraw.Draw(image).ellipse([10, 12, 40, 44], fill=(220, 40, 40))
    return image, [(10.0, 12.0, 40.0, 44.0)], ["red circle"]


def check_sdxl(work: Path) -> str:
    """The ``sdxl_controlnet`` synthesizer loads a tiny SDXL ControlNet inpaint pipeline and repaints an image."""
    from syngrpo_sdxl.tiny import build_tiny_sdxl_controlnet

    from syngrpo.plugins import get_registry
    from syngrpo.synthesis.pipeline import SynthesisRequest, boxes_mask

    importlib.import_module("accelerate")  # cpu_offload: true needs it
    model = build_tiny_sdxl_controlnet(work / "sdxl", seed=0)
    synth = get_registry().create("synthesizers", "sdxl_controlnet", model=str(model), controlnet=None,
                                  local_files_only=True, size=128, steps=2, multiple=64)
    image, boxes, labels = _tiny_scene()
    (out,) = synth.synthesize([SynthesisRequest(image, boxes_mask(boxes, image.size), boxes, labels, "a beach", 0)])
    assert out.size == image.size, out.size
    return f"diffusers {importlib.metadata.version('diffusers')}: one image repainted"


def check_sam(work: Path) -> str:
    """The ``sam`` segmenter answers a box prompt (transformers' SamModel); segment_anything is installed and,
    without a torchvision, its back end says so instead of failing at import."""
    from syngrpo_sam.tiny import build_tiny_sam

    from syngrpo.errors import MissingExtraError
    from syngrpo.plugins import get_registry

    seg = get_registry().create("segmenters", "sam", model=str(build_tiny_sam(work / "sam", seed=0)),
                                local_files_only=True)
    image, boxes, _ = _tiny_scene()
    (mask,) = seg.segment([image], [boxes])
    assert mask.size == image.size and mask.mode == "L"
    importlib.metadata.version("segment-anything")
    if importlib.util.find_spec("torchvision") is None:
        try:
            get_registry().create("segmenters", "sam", backend="segment_anything", checkpoint="sam_vit_b.pth")
        except MissingExtraError as exc:
            assert "torchvision" in str(exc), exc
        else:
            raise AssertionError("segment_anything imported without torchvision")
    return "transformers SamModel: one mask; segment-anything installed"


def check_ben2(work: Path) -> str:
    """Every module BEN2 imports is there (torchvision aside: yours), and the ``ben2`` segmenter's factory,
    with BEN2 itself absent (it is not on PyPI), names what to install."""
    from syngrpo.errors import MissingExtraError
    from syngrpo.plugins import get_registry

    missing = [m for m in BEN2_IMPORTS if m != "torchvision" and importlib.util.find_spec(m) is None]
    assert not missing, f"the ben2 extra leaves out modules BEN2 imports: {missing}"
    # importable without torchvision; timm imports torchvision itself, so it is only looked up here
    for module in ("cv2", "einops", "huggingface_hub"):
        importlib.import_module(module)
    try:
        get_registry().create("segmenters", "ben2")
    except MissingExtraError as exc:
        assert exc.module == "ben2" and "syngrpo[ben2]" in str(exc) and "PramaLLC/BEN2" in str(exc), exc
    else:
        raise AssertionError("the ben2 package is installed here: this check expects the extra alone")
    return f"cv2 {importlib.import_module('cv2').__version__}, einops, timm {importlib.metadata.version('timm')}"


def check_lora(work: Path) -> str:
    """``model.lora`` wraps the tiny policy's language-model projections in peft adapters."""
    from syngrpo.models.policy import load_policy
    from syngrpo.models.tiny_policy import build_tiny_policy

    bundle = load_policy(build_tiny_policy(work / "policy", seed=0), lora={"enabled": True, "r": 4})
    trainable = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), trainable[:5]
    return f"peft {importlib.metadata.version('peft')}: {len(trainable)} adapter tensors"


def _track(name: str, work: Path, **options) -> object:
    from syngrpo.plugins import get_registry

    tracker = get_registry().create("trackers", name, **options)
    run_dir = work / name
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker.start(run_dir=run_dir, run_name="extras-check", config={"optim": {"lr": 1e-3}}, start_step=0)
    tracker.log_metrics(1, {"reward/total": 0.5})
    tracker.close()
    return run_dir


def check_wandb(work: Path) -> str:
    """The ``wandb`` tracker logs a metric to an offline run."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(work),
                       "WANDB_CACHE_DIR": str(work / "wandb-cache"), "WANDB_CONFIG_DIR": str(work / "wandb-cfg"),
                       "WANDB_DISABLE_GIT": "true"}.items():
        os.environ[key] = value
    run_dir = _track("wandb", work, project="syngrpo-extras")
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb")), "no offline run written"
    return f"wandb {importlib.metadata.version('wandb')}: an offline run"


def check_mlflow(work: Path) -> str:
    """The ``mlflow`` tracker logs a metric to the run directory's file store, read back with MLflow's client."""
    from mlflow.tracking import MlflowClient
    from syngrpo_trackers.mlflow_tracker import ID_FILE

    run_dir = _track("mlflow", work)
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    history = client.get_metric_history((run_dir / ID_FILE).read_text().strip(), "reward/total")
    assert [m.value for m in history] == [0.5], history
    return f"mlflow-skinny {importlib.metadata.version('mlflow-skinny')}: a metric read back"


def check_datasets(work: Path) -> str:
    """``data.train: file.parquet`` reads a Hugging Face dataset file with an embedded image."""
    import io

    import datasets
    from PIL import Image

    from syngrpo.data.hf import load_rows

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    features = datasets.Features({"image": datasets.Image(), "problem": datasets.Value("string")})
    path = work / "rows.parquet"
    datasets.Dataset.from_dict({"image": [{"bytes": buf.getvalue(), "path": None}], "problem": ["q"]},
                               features=features).to_parquet(str(path))
    rows = load_rows(str(path))
    assert len(rows) == 1 and rows[0]["problem"] == "q" and rows[0]["image"].size == (8, 8)
    return f"datasets {importlib.metadata.version('datasets')}: a parquet file read"


def check_docs(work: Path) -> str:
    """The documentation site with its API reference builds with warnings as errors."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    proc = subprocess.run([str(mkdocs), "build", "--strict", "--quiet", "--site-dir", str(work / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "site" / "index.html").is_file()
    return f"mkdocs {importlib.metadata.version('mkdocs')}: site built"


def check_ray(work: Path) -> str:
    """The ``ray`` server backend finds Ray and a task runs on a local 127.0.0.1 cluster joined by address."""
    from syngrpo_ray.address import keep_loopback
    from syngrpo_ray.cluster import LocalCluster

    cluster = LocalCluster(num_cpus=1)
    address = cluster.start()
    try:
        keep_loopback(address)
        import ray

        ray.init(address=address, logging_level="ERROR")
        try:
            assert ray.get(ray.remote(lambda x: x + 1).remote(41)) == 42
        finally:
            ray.shutdown()
    finally:
        cluster.stop()
    from syngrpo.plugins import get_registry

    assert "ray" in get_registry().names("server_backends")
    return f"ray {importlib.metadata.version('ray')}: a task ran on a local cluster"


CHECKS: dict[str, Callable[[Path], str]] = {
    "sdxl": check_sdxl, "sam": check_sam, "ben2": check_ben2, "lora": check_lora, "wandb": check_wandb,
    "mlflow": check_mlflow, "datasets": check_datasets, "docs": check_docs, "ray": check_ray,
}

#: extras without a check here, and why (tests/test_extras.py keeps this and pyproject.toml in step)
NOT_CHECKED = {"vllm": "CUDA only; never installed on a CPU machine", "dev": "the test environment itself",
               "peers": "test-only: tests/peers/ compares with the peers' code in it (a step of .ci/run)"}


if __name__ == "__main__":
    extra, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    print(f"{extra}: {CHECKS[extra](work)}")
