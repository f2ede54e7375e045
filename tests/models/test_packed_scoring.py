"""Padding-free (packed) scoring equals the padded pass (issue 26 item 4).

Prompts of different lengths (two image sizes: the shorter one is left-padded in the padded pass) and
completions that end early (right padding): the packed pass drops all of it.  If the per-sequence
text positions were missing, transformers would build one causal mask over the whole pack and every
row after the first would attend to the rows before it; if the 3-D rotary positions were taken from
the pack instead of each row, the image tokens of later rows would sit at the wrong places.  Either
breaks these equalities far beyond 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from syngrpo.models.scoring import completion_logprobs, supports_packed

G = 2


@pytest.fixture(scope="module")
def ragged(policy):
    """Two prompts of different lengths, G = 2 completions each, two of them padded on the right."""
    from PIL import Image

    from syngrpo.models.policy import encode_prompts

    images = [Image.new("RGB", (112, 112), (200, 10, 10)), Image.new("RGB", (224, 168), (10, 200, 10))]
    batch = encode_prompts(policy, images, ["Find the red thing.", "Where is the green square? Answer in json."])
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(policy.tokenizer) - 20, (2 * G, 24), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 3:] = 0
    ids = ids * mask + policy.pad_token_id * (1 - mask)
    assert batch.attention_mask.sum(1).unique().numel() == 2  # the prompts differ in length
    return batch, ids, mask


def _pass(model, ragged, **how):
    batch, ids, mask = ragged
    model.zero_grad(set_to_none=True)
    logp, entropy = completion_logprobs(model, batch, ids, mask, group_size=G, with_entropy=True,
                                        temperature=0.7, **how)
    weights = torch.linspace(-1.0, 1.0, logp.shape[0])[:, None]  # per-row weights, as GRPO's
    ((logp * weights).sum() + 0.1 * entropy.sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), entropy.detach(), grads


def test_packed_scoring_gives_the_padded_logprobs_entropies_and_gradients(fresh_policy, ragged):
    model = fresh_policy.model.train()
    assert supports_packed(model)
    lp_a, ent_a, g_a = _pass(model, ragged)
    lp_b, ent_b, g_b = _pass(model, ragged, packed=True)
    mask = ragged[2].bool()
    assert (lp_b[~mask] == 0).all() and (ent_b[~mask] == 0).all()  # padding scores 0, as the padded pass
    assert (lp_a - lp_b).abs().max() <= 1e-5 * lp_a.abs().max()
    assert (ent_a - ent_b).abs().max() <= 1e-5 * ent_a.abs().max()
    assert g_a.keys() == g_b.keys()
    assert any("visual" in n for n in g_a)  # the vision tower is trained through both paths
    for name in g_a:
        scale = g_a[name].abs().max().clamp(min=1e-12)
        assert (g_a[name] - g_b[name]).abs().max() <= 1e-5 * scale, name


def test_packed_and_shared_prefix_together_are_refused(policy, ragged):
    batch, ids, mask = ragged
    with pytest.raises(ValueError, match="shared_prefix and packed"):
        completion_logprobs(policy.model, batch, ids, mask, group_size=G, shared_prefix=True, packed=True)
