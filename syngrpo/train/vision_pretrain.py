"""A short dense pre-training of a *randomly initialised* vision tower, standing in for a pretrained one.

Syn-GRPO starts from Qwen2.5-VL, whose vision encoder already says where things
are.  A tiny random tower does not: its merged image tokens carry an object's
shape, colour and position marks only in low-variance directions (a standardised
linear probe reads the cell, the language model does not learn to), and in the
CPU study's pilots (docs/study.md) a policy SFT'd on top of it stayed at the
chance level for 1,500 steps, even with one-token answers, while the same
policy with a few hundred steps of this pre-training reached 100 % on held-out
images.

The objective is dense and label-free for the language model: a linear head on
each merged image token predicts the index of that token when an object's
centre lies in it, and "background" otherwise.  A token can only know its own
index from the image content (the tower has no absolute position embedding),
so the toy images must carry position marks (``make_rec_toy(position_code=True)``).
The head is thrown away afterwards; only the tower and its merger keep what
they learned.  Use it on images disjoint from every split the study reports.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from syngrpo.rundir.progress import Progress
from syngrpo.types import Sample

log = logging.getLogger(__name__)


def image_token_features(model: Any, pixel_values: Any, image_grid_thw: Any) -> Any:
    """(total merged tokens, hidden) features the language model receives for a batch of images."""
    import torch

    from syngrpo.models.modules import unwrap_model

    out = unwrap_model(model).model.get_image_features(pixel_values, image_grid_thw)
    feats = getattr(out, "pooler_output", out)
    if isinstance(feats, (list, tuple)):
        feats = torch.cat(list(feats))
    return feats


def centre_token_labels(boxes_per_image: Sequence[Sequence[Sequence[float]]], frames: Sequence[Any],
                        grid_thw: Sequence[Sequence[int]], patch_size: int, merge: int) -> list[list[int]]:
    """Per image, per merged token: its own index where an object's centre falls in it, else the token count.

    ``boxes_per_image`` are in the original image frame; ``frames`` map them into the
    model-input frame (the processor's resize), where one merged token covers
    ``patch_size * merge`` pixels.
    """
    labels = []
    for boxes, frame, (t, h, w) in zip(boxes_per_image, frames, grid_thw, strict=True):
        n = int(t) * (int(h) // merge) * (int(w) // merge)
        row_labels = [n] * n
        for box in boxes:
            k = _centre_token(box, frame, (t, h, w), patch_size, merge)
            row_labels[k] = k
        labels.append(row_labels)
    return labels


def centre_token_classes(boxes_per_image: Sequence[Sequence[Sequence[float]]],
                         classes_per_image: Sequence[Sequence[int]], frames: Sequence[Any],
                         grid_thw: Sequence[Sequence[int]], patch_size: int, merge: int,
                         ignore: int = -100) -> list[list[int]]:
    """Per image, per merged token: the class of the object whose centre falls in it, else ``ignore``."""
    out = []
    for boxes, classes, frame, thw in zip(boxes_per_image, classes_per_image, frames, grid_thw, strict=True):
        n = int(thw[0]) * (int(thw[1]) // merge) * (int(thw[2]) // merge)
        row = [ignore] * n
        for box, cls in zip(boxes, classes, strict=True):
            row[_centre_token(box, frame, thw, patch_size, merge)] = int(cls)
        out.append(row)
    return out


def _centre_token(box: Sequence[float], frame: Any, thw: Sequence[int], patch_size: int, merge: int) -> int:
    """Index of the merged token (row-major, first frame) that holds the centre of ``box`` (original frame)."""
    rows, cols = int(thw[1]) // merge, int(thw[2]) // merge
    side = patch_size * merge
    x0, y0, x1, y1 = frame.box(box)
    r = min(rows - 1, max(0, int(((y0 + y1) / 2) // side)))
    c = min(cols - 1, max(0, int(((x0 + x1) / 2) // side)))
    return r * cols + c


def object_classes(samples: Sequence[Sample]) -> list[str] | None:
    """The sorted object labels of toy samples (``meta["objects"][i]["label"]``), or None if some sample has none."""
    names = set()
    for s in samples:
        objects = s.meta.get("objects")
        if not isinstance(objects, list) or not objects or not all(isinstance(o, dict) and o.get("label")
                                                                   for o in objects):
            return None
        names.update(str(o["label"]) for o in objects)
    return sorted(names)


def pretrain_vision(bundle: Any, task: Any, samples: Sequence[Sample], *, steps: int, lr: float = 3e-3,
                    batch_size: int = 32, seed: int = 0, progress: bool = False,
                    object_labels: bool = False, progress_interval_s: float | None = None) -> dict[str, Any]:
    """``steps`` AdamW steps of the dense centre-token objective on ``samples``; returns the last losses.

    ``object_labels``: a second head also asks each object's centre token for the object's
    label (toy samples' ``meta["objects"][i]["label"]``, e.g. "red circle"), so the tokens
    say *what* is there as well as where, as a pretrained encoder's do; the language model
    then only has to match the question's words to them.
    Only the vision tower (with its merger) and temporary linear heads are trained.
    Every image must give the same number of merged tokens (a fixed image size),
    since the head's classes are the token indices.  Returns ``{"steps", "loss_first",
    "loss_last", "object_token_accuracy", "seconds"}`` (accuracy on the last batch's
    object tokens: did each say which token it is).
    """
    import torch

    from syngrpo.data.images import load_rgb
    from syngrpo.models.policy import encode_prompts, vision_tower

    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1 (got {steps}, {batch_size})")
    if not samples:
        raise ValueError("pretrain_vision needs at least one sample")
    model = bundle.model
    tower = vision_tower(model)
    merge = int(getattr(tower, "spatial_merge_size", 2))
    hidden = model.config.text_config.hidden_size if hasattr(model.config, "text_config") else model.config.hidden_size
    rng = random.Random(seed)
    images: dict[int, Any] = {}
    head: torch.nn.Linear | None = None
    names = object_classes(samples) if object_labels else None
    if object_labels and names is None:
        raise ValueError("object_labels needs samples whose meta['objects'] all have a 'label' (toy data)")
    class_of = {name: i for i, name in enumerate(names or [])}
    label_head: torch.nn.Linear | None = None
    optimizer = None
    losses: list[float] = []
    accuracy = float("nan")
    start = time.perf_counter()
    was_training = model.training
    model.train()
    bar = Progress("vision pre-training", steps, enabled=progress, interval_s=progress_interval_s)
    try:
        for _ in range(steps):
            idx = rng.sample(range(len(samples)), min(batch_size, len(samples)))
            for i in idx:
                if i not in images:
                    images[i] = load_rgb(samples[i].image)
            batch = encode_prompts(bundle, [images[i] for i in idx], [""] * len(idx))
            grid = batch.image_grid_thw.tolist()
            n_tokens = {int(t) * (int(h) // merge) * (int(w) // merge) for t, h, w in grid}
            if len(n_tokens) != 1:
                raise ValueError(f"pretrain_vision needs images of one size (merged token counts {sorted(n_tokens)})")
            n = n_tokens.pop()
            if head is None:
                # drawn on the CPU, then moved: the same heads on every device (a CPU generator cannot fill CUDA)
                gen = torch.Generator().manual_seed(seed)
                head = torch.nn.Linear(hidden, n + 1)
                heads = [head]
                if names:
                    label_head = torch.nn.Linear(hidden, len(names))
                    heads.append(label_head)
                with torch.no_grad():
                    for h in heads:
                        h.weight.normal_(0.0, hidden ** -0.5, generator=gen)
                        h.bias.zero_()
                        h.to(bundle.device)
                optimizer = torch.optim.AdamW(list(tower.parameters()) + [p for h in heads for p in h.parameters()],
                                              lr=lr)
            elif head.out_features != n + 1:
                raise ValueError("pretrain_vision needs images of one size")
            labels = torch.tensor(centre_token_labels([task.foreground_boxes(samples[i]) for i in idx],
                                                      batch.input_frames, grid, bundle.patch_size, merge),
                                  device=bundle.device)
            feats = image_token_features(model, batch.pixel_values, batch.image_grid_thw).view(len(idx), n, -1)
            logits = head(feats.float())
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n + 1), labels.reshape(-1))
            if label_head is not None:
                classes = torch.tensor(centre_token_classes(
                    [task.foreground_boxes(samples[i]) for i in idx],
                    [[class_of[str(o["label"])] for o in samples[i].meta["objects"]] for i in idx],
                    batch.frames, grid, bundle.patch_size, merge), device=bundle.device)
                loss = loss + torch.nn.functional.cross_entropy(label_head(feats.float()).reshape(-1, len(class_of)),
                                                                classes.reshape(-1))
            assert optimizer is not None
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            objects = labels < n
            if bool(objects.any()):
                accuracy = float((logits.argmax(-1)[objects] == labels[objects]).float().mean())
            bar.update(1, {"loss": losses[-1]})
    finally:
        bar.close()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    stats = {"steps": steps, "loss_first": losses[0] if losses else float("nan"),
             "loss_last": losses[-1] if losses else float("nan"), "object_token_accuracy": accuracy,
             "seconds": time.perf_counter() - start}
    (log.debug if progress else log.info)(
        "vision pre-training: %d steps in %.1f s, loss %.3f -> %.3f, object tokens %.0f %%", steps, stats["seconds"],
        stats["loss_first"], stats["loss_last"], 100 * accuracy)
    return stats
