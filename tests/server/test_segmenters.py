"""Segmenters: ``box``, ``sam`` (a tiny random SamModel), ``ben2`` where installed, and BEN2's RNG guard."""

from __future__ import annotations

import importlib.util
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from syngrpo.errors import MissingExtraError
from syngrpo.plugins import get_registry
from syngrpo.synthesis.pipeline import PipelineItem, Segmenter, boxes_mask, run_pipeline

from .support import kept_pixels_equal, scene


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None and bool(importlib.import_module(module))
    except Exception:  # noqa: BLE001 - segment_anything raises when torchvision is missing
        return False


pytestmark = pytest.mark.usefixtures("single_torch_thread")

HAS_BEN2 = _importable("ben2")
HAS_SEGMENT_ANYTHING = _importable("segment_anything")


def test_box_segmenter_masks_exactly_the_labelled_boxes():
    seg = get_registry().create("segmenters", "box")
    assert isinstance(seg, Segmenter)
    image, boxes, _ = scene()
    (mask,) = seg.segment([image], [boxes])
    assert mask.mode == "L" and mask.size == image.size
    assert np.array_equal(np.asarray(mask), np.asarray(boxes_mask(boxes, image.size)))


# ----------------------------------------------------------------------------- sam (transformers)


@pytest.fixture(scope="module")
def sam(tiny_sam_dir):
    return get_registry().create("segmenters", "sam", model=str(tiny_sam_dir), local_files_only=True)


def test_sam_answers_box_prompts_with_one_binary_mask_per_image(sam):
    assert isinstance(sam, Segmenter)
    image, boxes, _ = scene()
    small = image.resize((50, 40))
    masks = sam.segment([image, small], [boxes, [(5, 5, 20, 20)]])
    assert [m.size for m in masks] == [image.size, small.size]
    for m in masks:
        assert m.mode == "L" and set(np.unique(np.asarray(m))) <= {0, 255}


def test_sam_masks_of_several_boxes_are_their_union(sam):
    image, boxes, _ = scene()
    union = np.asarray(sam.segment([image], [boxes])[0]) > 0
    each = [np.asarray(sam.segment([image], [[b]])[0]) > 0 for b in boxes]
    assert np.array_equal(union, each[0] | each[1])


def test_the_pipeline_with_sam_keeps_only_segmented_pixels_inside_the_boxes(sam):
    image, boxes, labels = scene()
    synth = get_registry().create("synthesizers", "procedural")
    # which pixels are kept, not the label check: a tiny *random* SAM answers the crop the object rule asks about
    # (the box alone, zoomed) unlike the whole image, so that rule (rightly) refuses its masks; it is off here
    (outcome,) = run_pipeline([PipelineItem(image, boxes, labels, "a blue checkered floor", 3)], segmenter=sam,
                              synthesizer=synth, min_label_object_coverage=0.0)
    assert outcome.ok, outcome.error
    keep = np.asarray(outcome.keep_mask) > 0
    inside = np.asarray(boxes_mask(boxes, image.size)) > 0
    assert keep.any() and not (keep & ~inside).any()
    assert kept_pixels_equal(image, outcome.image, outcome.keep_mask)


def test_sam_segment_anything_backend_says_torchvision_is_missing_when_it_is():
    if HAS_SEGMENT_ANYTHING:
        pytest.skip("segment_anything imports here; the error path cannot be shown")
    with pytest.raises(MissingExtraError, match="torchvision|segment_anything") as err:
        get_registry().create("segmenters", "sam", backend="segment_anything", checkpoint="sam_vit_b.pth")
    assert "backend: transformers" in str(err.value) or "segment_anything" in str(err.value)


@pytest.mark.skipif(not HAS_SEGMENT_ANYTHING,
                    reason="segment_anything imports torchvision at import time, and torchvision is not importable")
def test_sam_segment_anything_backend_runs_a_tiny_sam_with_box_prompts():
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed, size, patch = 32, 128, 16
    sam_model = Sam(
        image_encoder=ImageEncoderViT(depth=2, embed_dim=embed, img_size=size, mlp_ratio=2, num_heads=2,
                                      patch_size=patch, out_chans=embed, qkv_bias=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                      window_size=4, global_attn_indexes=(1,)),
        prompt_encoder=PromptEncoder(embed_dim=embed, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=embed, mlp_dim=64, num_heads=2), transformer_dim=embed, iou_head_depth=2,
            iou_head_hidden_dim=32),
    )
    seg = get_registry().create("segmenters", "sam", backend="segment_anything", sam_model=sam_model)
    image, boxes, _ = scene()
    (mask,) = seg.segment([image], [boxes])
    assert mask.size == image.size and mask.mode == "L"


# ----------------------------------------------------------------------------- ben2


@pytest.mark.skipif(not HAS_BEN2, reason="the upstream `ben2` package is not installed (not on PyPI; "
                                         "docs/data-server.md says how to install it from its repository)")
def test_ben2_segments_and_leaves_the_callers_random_streams_alone():  # pragma: no cover - needs ben2 + weights
    seg = get_registry().create("segmenters", "ben2")
    image, boxes, _ = scene()
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    (mask,) = seg.segment([image], [boxes])
    assert mask.size == image.size
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(HAS_BEN2, reason="ben2 is installed: the missing-package error cannot be shown")
def test_ben2_without_its_package_is_a_clear_missing_extra_error():
    with pytest.raises(MissingExtraError, match=r"the ben2 segmenter needs .*'ben2'.*git\+https://github.com/PramaLLC"):
        get_registry().create("segmenters", "ben2")


def _reseed_everything_like_ben2() -> None:
    """What upstream BEN2 does on import and on every inference call."""
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    os.environ["PYTHONHASHSEED"] = "9"


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(2).tolist()


def test_the_ben2_rng_guard_restores_every_random_stream_it_reseeds(monkeypatch):
    from syngrpo_ben2.segment import preserved_rng_state

    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    reference = [_draws() for _ in range(2)]

    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    first = _draws()
    with preserved_rng_state():
        _reseed_everything_like_ben2()
        inside = _draws()
    second = _draws()

    assert [first, second] == reference  # the caller's streams continue as if nothing had happened
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    assert inside == _draws()  # and the intruder really did reseed them
    assert torch.are_deterministic_algorithms_enabled() is False
    assert torch.backends.cudnn.deterministic is False
    assert "PYTHONHASHSEED" not in os.environ


def test_the_ben2_rng_guard_restores_even_when_the_guarded_call_raises():
    from syngrpo_ben2.segment import preserved_rng_state

    torch.manual_seed(7)
    state = torch.get_rng_state()
    py_state = random.getstate()
    with pytest.raises(RuntimeError, match="inference failed"), preserved_rng_state():
        _reseed_everything_like_ben2()
        raise RuntimeError("inference failed")
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state
    assert torch.are_deterministic_algorithms_enabled() is False


def test_ben2_alpha_matte_becomes_the_foreground_mask():
    from syngrpo_ben2.segment import alpha_mask

    rgba = Image.new("RGBA", (8, 6), (10, 20, 30, 0))
    rgba.putpixel((2, 3), (10, 20, 30, 255))
    mask = alpha_mask(rgba, (16, 12))
    assert mask.mode == "L" and mask.size == (16, 12) and np.asarray(mask).max() > 128
