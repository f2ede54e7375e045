"""Dense pre-training of a random vision tower: the labels, and that the tower learns to say where objects are."""

from __future__ import annotations

import pytest
import torch

from syngrpo.models.policy import load_policy, vision_tower
from syngrpo.models.tiny_policy import build_tiny_policy
from syngrpo.perception.geometry import ImageTransform
from syngrpo.plugins import get_registry
from syngrpo.train.vision_pretrain import centre_token_labels, pretrain_vision


def test_centre_token_labels_by_hand():
    # a 112 x 56 image resized to 112 x 56 (identity), patch 14, merge 2: merged tokens of 28 px, 2 rows x 4 cols
    frame = ImageTransform.resize(112, 56, 112, 56)
    boxes = [(0, 0, 20, 20), (60, 30, 80, 50)]  # centres (10, 10) -> token 0; (70, 40) -> row 1, col 2 -> token 6
    labels = centre_token_labels([boxes], [frame], [(1, 4, 8)], patch_size=14, merge=2)
    assert labels == [[0, 8, 8, 8, 8, 8, 6, 8]]
    # the frame maps original boxes into the model's input: a 224 px original shrunk by 2 lands the same way
    half = ImageTransform.resize(224, 112, 112, 56)
    assert centre_token_labels([[(b[0] * 2, b[1] * 2, b[2] * 2, b[3] * 2) for b in boxes]], [half],
                               [(1, 4, 8)], patch_size=14, merge=2) == labels


@pytest.fixture(scope="module")
def grid_toy(tmp_path_factory):
    task = get_registry().create("tasks", "rec")
    root = tmp_path_factory.mktemp("vision-pretrain")
    samples = task.make_toy_dataset(root / "data", n=64, split="pretrain", seed=0, image_size=56, grid=2,
                                    position_code=True, n_shapes=(1, 1), relational_prob=0.0)
    policy = build_tiny_policy(root / "policy", seed=0, text_hidden=64, layers=1, vision_hidden=32, vision_depth=2,
                               max_pixels=56 * 56)
    return task, samples, policy


def test_the_tower_learns_which_token_holds_the_object_and_the_language_model_is_untouched(grid_toy):
    task, samples, policy = grid_toy
    bundle = load_policy(str(policy), device="cpu", dtype="float32")
    tower = {n: p.detach().clone() for n, p in vision_tower(bundle.model).named_parameters()}
    lm = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if ".visual." not in f".{n}"}
    stats = pretrain_vision(bundle, task, samples, steps=60, lr=3e-3, batch_size=16, seed=0)
    # 4 merged tokens + background: chance on the object tokens is 1 in 5
    assert stats["object_token_accuracy"] >= 0.9
    assert stats["loss_last"] < stats["loss_first"] / 4
    moved = [n for n, p in vision_tower(bundle.model).named_parameters() if not torch.equal(p, tower[n])]
    assert moved  # the tower learned
    assert all(torch.equal(p, lm[n]) for n, p in bundle.model.named_parameters() if n in lm)  # nothing else did
    assert all(p.grad is None for p in bundle.model.parameters())


def test_images_of_different_sizes_are_refused(grid_toy, tmp_path):
    task, samples, policy = grid_toy
    from PIL import Image

    Image.new("RGB", (56, 28), "white").save(tmp_path / "wide.png")  # resized to 3 x 2 merged tokens, not 2 x 2
    wide = samples[0].evolve(id="wide", image=str(tmp_path / "wide.png"), width=56, height=28)
    bundle = load_policy(str(policy), device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="one size"):
        pretrain_vision(bundle, task, [samples[0], wide], steps=1, batch_size=2)
