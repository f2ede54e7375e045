"""The ``ben2`` segmenter: BEN2 (Background Erase Network), the paper's foreground segmenter.

BEN2 is not on PyPI; install it from its repository (docs/data-server.md).  Upstream reseeds
every global random number generator (python ``random``, numpy, torch CPU and CUDA) to 9 when
it is imported and on every ``inference()`` call, and may switch torch to deterministic
algorithms.  In an RL run that would make every later sample, dropout mask and shuffle the same
after each synthesis, so :func:`preserved_rng_state` saves all of it before and restores it
after the import and every call.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from syngrpo.errors import MissingExtraError

#: BEN2 is not on PyPI.  ``syngrpo[ben2]`` installs what its code imports (timm, einops, and OpenCV, which BEN2's
#: own requirements leave out), bar torchvision: that must be the build for the installed torch.
BEN2_HINT = ("BEN2 is not on PyPI: pip install 'syngrpo[ben2]' (timm, einops, opencv-python-headless), a "
             "torchvision built for your torch, then pip install git+https://github.com/PramaLLC/BEN2.git")


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore every global RNG (and torch's determinism switches) to what they were on entry.

    Covers python ``random``, numpy's global ``np.random`` state, torch's CPU generator, every
    initialised CUDA device's generator, ``torch.backends.cudnn.{deterministic,benchmark}``,
    ``torch.use_deterministic_algorithms`` and ``$PYTHONHASHSEED``.  Restores on errors too.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch = sys.modules.get("torch")
    saved_torch: dict[str, Any] = {}
    if torch is not None:
        saved_torch["cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            saved_torch["cuda"] = torch.cuda.get_rng_state_all()
        saved_torch["cudnn"] = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        saved_torch["det"] = (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled())
    hashseed = os.environ.get("PYTHONHASHSEED")
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch = sys.modules.get("torch")
        if torch is not None:
            if "cpu" in saved_torch:
                torch.set_rng_state(saved_torch["cpu"])
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved_torch["cudnn"]
                det, warn_only = saved_torch["det"]
                torch.use_deterministic_algorithms(det, warn_only=warn_only)
            if "cuda" in saved_torch:
                torch.cuda.set_rng_state_all(saved_torch["cuda"])
        if hashseed is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = hashseed


def import_ben2() -> Any:
    """The upstream ``ben2`` module, imported under the RNG guard, or a clear :class:`MissingExtraError`."""
    import importlib

    import torch  # noqa: F401 - imported first so the guard also covers torch's generators

    with preserved_rng_state():
        try:
            return importlib.import_module("ben2")
        except ImportError as exc:
            missing = exc.name or "ben2"
            raise MissingExtraError("the ben2 segmenter", missing, "ben2", hint=BEN2_HINT) from exc


class Ben2Segmenter:
    """Foreground mattes from BEN2 (boxes are not used: the pipeline intersects with them)."""

    def __init__(self, *, model: str = "PramaLLC/BEN2", checkpoint: str | None = None, device: str = "cpu",
                 refine_foreground: bool = False, batch_size: int = 3) -> None:
        ben2 = import_ben2()
        with preserved_rng_state():
            if checkpoint is not None:
                net = ben2.BEN_Base()
                net.loadcheckpoints(checkpoint)
            else:
                net = ben2.BEN_Base.from_pretrained(model)
            self.model = net.to(device).eval()
        self.device = device
        self.refine_foreground = refine_foreground
        self.batch_size = max(1, int(batch_size))

    def segment(self, images: list[Image.Image], boxes: list[list[Sequence[float]]]) -> list[Image.Image]:
        out: list[Image.Image] = []
        rgb = [im.convert("RGB") for im in images]
        for start in range(0, len(rgb), self.batch_size):
            chunk = rgb[start : start + self.batch_size]
            with preserved_rng_state():
                result = self.model.inference(chunk if len(chunk) > 1 else chunk[0],
                                              refine_foreground=self.refine_foreground)
            results = result if isinstance(result, list) else [result]
            for im, fg in zip(chunk, results, strict=True):
                out.append(alpha_mask(fg, im.size))
        return out


def alpha_mask(foreground: Image.Image, size: tuple[int, int]) -> Image.Image:
    """BEN2 returns the foreground as RGBA; its alpha is the matte (255 = foreground)."""
    alpha = foreground.getchannel("A") if foreground.mode == "RGBA" else foreground.convert("L")
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.BILINEAR)
    return alpha
