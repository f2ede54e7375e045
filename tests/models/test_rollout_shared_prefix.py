"""The ``hf`` engine's shared-prefix sampling (issue 26 item 5): each prompt's vision tower and prefill run once
for its G samples, and every decoding step sees the logits transformers ``generate`` computes for the same prefix.

The equality test replays ``generate``'s own sampled tokens through :func:`sample_shared_prefix` (its ``choose``
seam) and compares, step by step, the raw logits and the processed distribution (repetition penalty, suppressed
tokens, temperature, top-k, top-p: every setting the engine passes) on a tiny model of each patch-grid family,
prompts of different lengths (one left-padded).  The counting test hooks the vision tower and the language model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from syngrpo.models.family import get_family
from syngrpo.models.policy import encode_prompts, load_policy

#: the families with 3-D rotary positions (the shared-prefix path); InternVL keeps ``generate``
PATCH_GRID = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("shared-prefix-families")
    out = {
        name: load_policy(Path(get_family(name).build_tiny(root / name, seed=0)), dtype="float32", device="cpu")
        for name in (*PATCH_GRID, "internvl")
    }
    if importlib.util.find_spec("peft") is not None:  # the lora extra: adapters on, their B matrices non-zero
        lora = load_policy(root / "qwen2_5_vl", dtype="float32", device="cpu", lora={"r": 4, "alpha": 8})
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for name, param in lora.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5)
        out["qwen2_5_vl+lora"] = lora
    return out


def _prompts(bundle, two_images):
    return encode_prompts(bundle, two_images, ["Locate the red circle.", "Locate the blue square on the right."])


def _engine(**options):
    from syngrpo.plugins import get_registry

    return get_registry().create("rollout_engines", "hf", **options)


@pytest.mark.parametrize("name", [*PATCH_GRID, "qwen2_5_vl+lora"])
def test_each_step_sees_the_logits_generate_computes_for_the_same_prefix(name, bundles, two_images):
    from syngrpo_hf.engine import _expands_pixels, sample_shared_prefix

    if name not in bundles:
        pytest.skip("peft is not installed (the lora extra)")
    bundle = bundles[name]
    prompts = _prompts(bundle, two_images)
    assert prompts.attention_mask[:, 0].tolist().count(0) == 1  # one prompt is left-padded
    G, T, P = 3, 10, prompts.prompt_length
    engine = _engine(bundle=bundle, return_logprobs=True, top_k=40, repetition_penalty=1.3)
    assert engine.uses_shared_prefix(bundle)

    def config():
        cfg = engine.generation_config(bundle, num_generations=G, temperature=0.7, top_p=0.9, max_new_tokens=T)
        cfg.output_scores = True  # the processed scores too
        return cfg

    model = bundle.model.eval()
    with torch.no_grad():
        cfg = config()
        inputs = prompts.model_inputs()
        if not _expands_pixels(model):  # what the engine does on transformers < 5.2x
            inputs, cfg.num_return_sequences = prompts.expand(G).model_inputs(), 1
        torch.manual_seed(0)
        ref = model.generate(**inputs, generation_config=cfg)
        sampled = ref.sequences[:, P:]
        steps = sampled.shape[1]
        assert steps >= 4

        probs_seen: list[torch.Tensor] = []

        def replay(probs: torch.Tensor) -> torch.Tensor:
            probs_seen.append(probs)
            return sampled[:, len(probs_seen) - 1]

        ids, raw = sample_shared_prefix(model, prompts, config(), choose=replay)
    assert torch.equal(ids, sampled)  # the same rows in the same order, padding after EOS included
    assert len(raw) == len(probs_seen) == steps
    for t in range(steps):
        torch.testing.assert_close(raw[t], ref.logits[t].float(), rtol=0, atol=2e-5, msg=f"raw logits, step {t}")
        want = torch.softmax(ref.scores[t].float(), dim=-1)
        torch.testing.assert_close(probs_seen[t], want, rtol=0, atol=2e-6, msg=f"processed distribution, step {t}")
    # the processors did something: suppressed tokens have probability 0, top-k left at most 40 tokens
    assert (probs_seen[0][:, bundle.suppress_token_ids] == 0).all()
    assert int((probs_seen[0] > 0).sum(-1).max()) <= 40


def test_the_vision_tower_and_the_prompt_prefill_run_once_per_prompt(bundles, two_images):
    """G = 4: the vision tower sees each image once and the language model's prefill B rows, not B x G
    (``generate`` prefilled B x G rows; before transformers 5.2x its vision tower also ran G times)."""
    bundle = bundles["qwen2_5_vl"]
    prompts = _prompts(bundle, two_images)
    B, G, P = prompts.num_rows, 4, prompts.prompt_length
    model = bundle.model
    base = model.model
    seen = {"vision_rows": 0, "vision_calls": 0, "prefill_rows": [], "decode_rows": []}

    def on_vision(module, args, kwargs):
        seen["vision_calls"] += 1
        seen["vision_rows"] += int((args[0] if args else kwargs["hidden_states"]).shape[0])

    def on_text(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        shape = embeds.shape if embeds is not None else kwargs["input_ids"].shape
        seen["prefill_rows" if shape[1] > 1 else "decode_rows"].append(int(shape[0]))

    hooks = [
        base.visual.register_forward_pre_hook(on_vision, with_kwargs=True),
        base.language_model.register_forward_pre_hook(on_text, with_kwargs=True),
    ]
    try:
        for shared in (True, False):
            for k in seen:
                seen[k] = [] if isinstance(seen[k], list) else 0
            rollout = _engine(bundle=bundle, shared_prefix=shared).generate(
                bundle, prompts, num_generations=G, temperature=1.0, top_p=1.0, max_new_tokens=5, generator_seed=0
            )
            assert rollout.completion_ids.shape[0] == B * G
            if shared:
                got = dict(seen)
    finally:
        for h in hooks:
            h.remove()
    patches = int(prompts.pixel_values.shape[0])  # both images' patches, once
    assert got["vision_calls"] == 1 and got["vision_rows"] == patches
    assert got["prefill_rows"] == [B]  # one prefill of the B prompts (P tokens each)
    assert got["decode_rows"] and set(got["decode_rows"]) == {B * G}
    # the control: generate prefills B x G rows (and, before transformers 5.2x, encodes every image G times)
    assert seen["prefill_rows"] == [B * G] and seen["vision_rows"] in (patches, G * patches)
    assert P > 1


def test_families_without_the_path_keep_generate_and_the_option_turns_it_off(bundles, two_images):
    internvl = bundles["internvl"]
    assert not _engine(bundle=internvl).uses_shared_prefix(internvl)
    qwen = bundles["qwen2_5_vl"]
    assert not _engine(bundle=qwen, shared_prefix=False).uses_shared_prefix(qwen)
    rollout = _engine(bundle=internvl).generate(
        internvl,
        _prompts(internvl, two_images),
        num_generations=2,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=4,
        generator_seed=0,
    )
    assert rollout.completion_ids.shape[0] == 4


def test_sample_tokens_draws_each_token_with_its_probability_and_never_a_zero_one(monkeypatch):
    from syngrpo_hf.engine import sample_tokens

    p = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0, 0.5]])
    n = 20000
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        draws = torch.stack([sample_tokens(p) for _ in range(n)])  # (n, 2)
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=6).double() / n
        assert (freq[p[row] == 0] == 0).all()
        # 5 standard errors of a binomial frequency at n = 20000: <= 0.018
        assert (freq - p[row].double()).abs().max() <= 5 * (0.25 / n) ** 0.5
    # unnormalised rows (the processors' softmax rounding), and a uniform at the top of [0, 1) whose
    # product with the total rounds up to it: the last token with probability > 0, not the suppressed tail
    q = torch.tensor([[2.0, 0.0, 6.0, 0.0, 0.0]])
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.ones(*a[0], dtype=k.get("dtype"), device=k.get("device")))
    assert sample_tokens(q).tolist() == [2]
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(*a[0], dtype=k.get("dtype"), device=k.get("device")))
    assert sample_tokens(q).tolist() == [0]


def test_the_deferred_stop_check_of_a_gpu_gives_the_same_rollout(bundles, two_images):
    """On a GPU the loop reads "every row ended" one step late (no host wait per step) and drops the extra
    step; forced on here, the rollout equals the one that checks every step, shape included."""
    from syngrpo_hf.engine import sample_shared_prefix

    bundle = bundles["qwen2_5_vl"]
    prompts = _prompts(bundle, two_images)
    engine = _engine(bundle=bundle, return_logprobs=True)
    # EOS made likely so that every row ends well before the cap (the early exit is what is checked)
    eos = bundle.eos_token_ids[0]
    head = bundle.model.get_output_embeddings()

    def favour_eos(module, args, output):
        output = output.clone()
        output[..., eos] += 6.0
        return output

    handle = head.register_forward_hook(favour_eos)
    runs = {}
    try:
        for defer in (False, True):
            cfg = engine.generation_config(bundle, num_generations=3, temperature=1.0, top_p=1.0, max_new_tokens=40)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(3)
                runs[defer] = sample_shared_prefix(bundle.model.eval(), prompts, cfg, defer_stop=defer)
    finally:
        handle.remove()
    (ids, raw), (ids_d, raw_d) = runs[False], runs[True]
    assert ids.shape[1] < 40 and (ids[:, -1] == eos).any()  # stopped early, at the step the last row ended
    assert torch.equal(ids, ids_d) and len(raw) == len(raw_d) == ids.shape[1]
    assert all(torch.equal(a, b) for a, b in zip(raw, raw_d, strict=True))


def test_under_fsdp_the_step_runs_the_whole_model_and_gives_the_same_logits(bundles, two_images, monkeypatch):
    """The decoding step calls the language model and the head directly, except under FSDP (its root module's
    hooks must run): there the whole model's forward, whose logits must be the same."""
    import syngrpo_hf.engine as hf_engine

    bundle = bundles["qwen2_5_vl"]
    prompts = _prompts(bundle, two_images)
    engine = _engine(bundle=bundle, return_logprobs=True)
    calls = {"whole": 0}
    model = bundle.model.eval()

    def count(module, args, kwargs):
        calls["whole"] += 1

    runs = {}
    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        for fsdp in (False, True):
            monkeypatch.setattr(hf_engine, "_fsdp_managed", lambda m, _on=fsdp: _on)
            calls["whole"] = 0
            cfg = engine.generation_config(bundle, num_generations=3, temperature=1.0, top_p=1.0, max_new_tokens=8)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(5)
                runs[fsdp] = hf_engine.sample_shared_prefix(model, prompts, cfg)
            runs[fsdp] = (*runs[fsdp], calls["whole"])
    finally:
        handle.remove()
    (ids, raw, whole_direct), (ids_f, raw_f, whole_fsdp) = runs[False], runs[True]
    assert whole_direct == 1 and whole_fsdp == ids.shape[1]  # the prefill only / the prefill and every step
    assert torch.equal(ids, ids_f)
    for a, b in zip(raw, raw_f, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
