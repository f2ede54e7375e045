"""The ``policy`` describer: the (SFT-warmed) tiny policy writes descriptions in Syn-GRPO's format, offline."""

from __future__ import annotations

from syngrpo.data.images import load_rgb
from syngrpo.plugins import get_registry
from syngrpo.synthesis.describers import DescribeRequest


def test_the_policy_describer_returns_the_policys_own_descriptions(sft_policy_dir, tmp_path):
    task = get_registry().create("tasks", "rec")
    samples = task.make_toy_dataset(tmp_path, n=2, seed=0, split="train", image_size=56)
    describer = get_registry().create("describers", "policy", policy=str(sft_policy_dir), max_new_tokens=96,
                                      batch_size=2)
    requests = [DescribeRequest(image=load_rgb(s.image), question=task.question(s), n=3, seed=1, sample_id=s.id)
                for s in samples]
    got = describer.describe(requests)
    assert len(got) == 2 and all(len(ds) <= 3 for ds in got)
    found = [d for ds in got for d in ds]
    assert found, "the warmed-up policy writes <description>s: some must come back"
    assert all(d == d.strip() and d and "<" not in d for d in found)
    assert describer.describe(requests) == got  # seeded sampling: the same requests, the same descriptions
    describer.close()
