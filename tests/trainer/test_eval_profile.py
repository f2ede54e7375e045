"""``syngrpo eval``'s scoring path (``evaluate_policy``) follows the task's metric profile, as the reward does.

The rollout engine is a stand-in (it answers fixed texts for the prompts it gets, written from each
sample's label in the model-input frame) so the expected numbers are known; the policy, the
processor, the prompts and the frames are the real tiny Qwen2.5-VL's.
"""

from __future__ import annotations

import pytest
import torch

from syngrpo.models.policy import load_policy
from syngrpo.models.rollout import Rollout
from syngrpo.plugins import get_registry
from syngrpo.train.evaluate import evaluate_policy


class FixedAnswers:
    """Stand-in engine: for each prompt, ``template`` filled with the label's box in the model-input frame."""

    def __init__(self, samples, template):
        self.samples, self.template = list(samples), template
        self.calls = 0

    def generate(self, bundle, batch, *, num_generations, temperature, top_p, max_new_tokens, generator_seed=None):
        texts = []
        for b in range(batch.num_prompts):
            sample = self.samples[self.calls + b]
            texts.append(self.template(batch.frames[b].box(sample.solution)))
        self.calls += batch.num_prompts
        ids = torch.full((len(texts), 1), bundle.eos_token_ids[0])
        return Rollout(completion_ids=ids, completion_mask=torch.ones_like(ids), texts=texts,
                       prompt_index=torch.arange(len(texts)), batch=batch.collapse().expand(1), group_size=1)


ANSWERS = {
    # floats, no <answer> tags: the default profile reads the whole text (eval's fallback), vlmr1 never does
    "bare_floats": (lambda box: "[" + ", ".join(f"{v:.2f}" for v in box) + "]", 1.0, 0.0),
    # integers without tags: VLM-R1 scores 0 without an answer block, also in eval
    "bare_ints": (lambda box: "[" + ", ".join(str(round(v)) for v in box) + "]", 1.0, 0.0),
    # integers in an answer block: both profiles read it (IoU of a box rounded to whole pixels > 0.5 here)
    "tagged_ints": (lambda box: "<think>x</think><answer>[" + ", ".join(str(round(v)) for v in box) + "]</answer>",
                    1.0, 1.0),
    # a float inside the block: only the default profile accepts it
    "tagged_floats": (lambda box: "<answer>[" + ", ".join(f"{v:.1f}" for v in box) + "]</answer>", 1.0, 0.0),
}


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_eval_scores_with_the_tasks_profile(case, tiny_policy_dir, tmp_path):
    template, want_default, want_vlmr1 = ANSWERS[case]
    bundle = load_policy(tiny_policy_dir)
    for profile, want in (("default", want_default), ("vlmr1", want_vlmr1)):
        task = get_registry().create("tasks", "rec", profile=profile)
        samples = task.make_toy_dataset(tmp_path / profile, n=3, seed=0, split="val", image_size=56)
        result = evaluate_policy(bundle, task, samples, engine=FixedAnswers(samples, template), batch_size=2,
                                 response_mode="plain")
        assert result.metrics["acc@0.5"] == want, (profile, [r["completion"] for r in result.records])
