"""Each policy-loss plugin equals its peer's own code on the same tensors: loss and gradient, to 1e-6.

TRL 1.16 has no loss function to call: its losses live inside ``GRPOTrainer._compute_loss``.  The test calls
that method unchanged on an object that carries the trainer attributes it reads, with the one model call it
makes (``_get_per_token_logps_and_entropies``) answered by the test's log-probabilities: the boundary is the
model, every line of the loss is TRL's.  verl's losses are plain functions (``verl.trainer.ppo.core_algos``,
verl 0.9.1), called as they are with verl's own ``ActorConfig``.

What the comparisons fix on both sides, each a documented difference (docs/algorithm.md):

* TRL 1.16 multiplies its KL term by the importance ratio by default (``use_bias_correction_kl``); syngrpo's
  KL is the plain k3 of GRPO / VLM-R1 / verl, so the TRL side runs with that option off;
* every completion has at least one token (a real rollout always has its EOS): for a row with none,
  syngrpo's ``sequence_mean`` leaves the row out (MC-GRPO's dropped rollout) where TRL counts it as 0;
* verl's functions return the policy term only; they are compared with ``beta = 0``.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import syngrpo.builtin
from syngrpo.plugins import build_registry, make_plugin_manager

N, T = 6, 7  # B = 2 prompts x G = 3, up to 7 completion tokens
TOL = 1e-6


@pytest.fixture(scope="module")
def registry():
    return build_registry(make_plugin_manager([syngrpo.builtin], autoload=False))


def _tensors(seed: int = 0, *, spread: float = 0.3) -> dict[str, torch.Tensor]:
    """Log-probs of a policy that moved since sampling (ratios e^±spread, some outside the 0.2 clip), a reference,
    advantages of both signs and one zero, completions of 1 to 7 tokens."""
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(N, T, generator=g) * 3.0
    lengths = torch.tensor([7, 1, 4, 6, 3, 5])
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).float()
    return {
        "logp": logp,
        "old_logp": logp + spread * torch.randn(N, T, generator=g),
        "ref_logp": logp + 0.2 * torch.randn(N, T, generator=g),
        "advantages": torch.tensor([1.2, -0.7, 0.0, 0.4, -1.5, 0.9]),
        "token_advantages": torch.randn(N, T, generator=g),
        "mask": mask,
    }


def _ours(registry, name: str, t: dict, *, options: dict, advantages=None, old=True, is_weights=None):
    """syngrpo's loss and d loss / d logp."""
    logp = t["logp"].clone().requires_grad_()
    loss_fn = registry.create("policy_losses", name, **options)
    extra = {} if is_weights is None else {"is_weights": is_weights}
    loss, stats = loss_fn(logp=logp, old_logp=t["old_logp"] if old else None, ref_logp=t["ref_logp"],
                          advantages=t["advantages"] if advantages is None else advantages, mask=t["mask"], **extra)
    loss.backward()
    return loss.detach(), logp.grad, stats


# ---- TRL 1.16: GRPOTrainer._compute_loss on the test's tensors ---------------------------------------------


class _Accelerator:
    """The single-process answers of the accelerate calls the loss makes (gather, reduce: identity)."""

    num_processes = 1

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def _trl(trl_grpo, t: dict, *, loss_type: str, level: str = "token", beta: float = 0.04, eps_low: float = 0.2,
         eps_high: float = 0.2, advantages=None, old=True, is_ratio=None, sapo=(1.0, 1.05)):
    """TRL's loss and d loss / d logp; ``is_ratio``: the vLLM importance-sampling ratio TRL's loss multiplies in."""
    logp = t["logp"].clone().requires_grad_()
    zeros = torch.zeros(N, 1, dtype=torch.long)
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),  # the model
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=is_ratio is not None,
        vllm_importance_sampling_correction=is_ratio is not None, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        max_completion_length=T, accelerator=_Accelerator(), _metrics=defaultdict(lambda: defaultdict(list)),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, sapo_temperature_pos=sapo[0],
                             sapo_temperature_neg=sapo[1], steps_per_generation=1),
    )
    inputs = {"prompt_ids": zeros, "prompt_mask": torch.ones_like(zeros), "completion_ids": torch.zeros(N, T).long(),
              "completion_mask": t["mask"], "advantages": t["advantages"] if advantages is None else advantages,
              "ref_per_token_logps": t["ref_logp"], "num_items_in_batch": t["mask"].sum()}
    if old:
        inputs["old_per_token_logps"] = t["old_logp"]
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    loss = trl_grpo.GRPOTrainer._compute_loss(trainer, None, inputs)
    loss.backward()
    return loss.detach(), logp.grad


def _same(ours, theirs) -> None:
    (a, ga), (b, gb) = ours[:2], theirs[:2]
    assert abs(float(a) - float(b)) <= TOL, f"loss {float(a)} vs the peer's {float(b)}"
    assert float((ga - gb).abs().max()) <= TOL, f"gradient differs by {float((ga - gb).abs().max())}"


@pytest.mark.parametrize(("name", "aggregation", "loss_type", "level"), [
    ("grpo", "sequence_mean", "grpo", "token"),  # the harness itself: the loss both already had
    ("grpo", "token_mean", "bnpo", "token"),
    ("grpo", "constant", "dr_grpo", "token"),
    ("gspo", "sequence_mean", "grpo", "sequence"),
    ("gspo", "token_mean", "bnpo", "sequence"),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_clipped_losses_equal_trl(registry, trl_grpo, name, aggregation, loss_type, level, seed):
    t = _tensors(seed)
    # GSPO with its paper's clip range (3e-4, 4e-4): whole sequences are clipped, so the clip is exercised
    eps = (3e-4, 4e-4) if name == "gspo" else (0.2, 0.28)
    opts = {"beta": 0.04, "eps_low": eps[0], "eps_high": eps[1], "aggregation": aggregation}
    ours = _ours(registry, name, t, options=opts)
    assert ours[2]["clip_frac"] > 0
    _same(ours, _trl(trl_grpo, t, loss_type=loss_type, level=level, eps_low=eps[0], eps_high=eps[1]))


@pytest.mark.parametrize("ratio_max", [5.0, 1.2])
@pytest.mark.parametrize("old", [True, False])
def test_cispo_equals_trl(registry, trl_grpo, ratio_max, old):
    """TRL's CISPO caps the weight with ``epsilon_high`` (ScaleRL's ε_max = 5) and averages over tokens."""
    t = _tensors(2)
    ours = _ours(registry, "cispo", t, options={"beta": 0.04, "aggregation": "token_mean", "ratio_max": ratio_max},
                 old=old)
    _same(ours, _trl(trl_grpo, t, loss_type="cispo", eps_high=ratio_max, old=old))
    if ratio_max == 1.2 and old:
        assert ours[2]["clip_frac"] > 0


@pytest.mark.parametrize("taus", [(1.0, 1.05), (0.5, 2.0)])
def test_sapo_equals_trl(registry, trl_grpo, taus):
    t = _tensors(3, spread=0.8)
    ours = _ours(registry, "sapo", t, options={"beta": 0.04, "aggregation": "sequence_mean", "tau_pos": taus[0],
                                                "tau_neg": taus[1]})
    _same(ours, _trl(trl_grpo, t, loss_type="sapo", sapo=taus))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_rollout_correction_weights_enter_the_loss_as_in_trl(registry, trl_grpo, level):
    """The weights multiply the policy term of every token (not the KL term): TRL's ``importance_sampling_ratio``."""
    t = _tensors(4)
    g = torch.Generator().manual_seed(9)
    shape = (N, T) if level == "token" else (N, 1)
    ratio = torch.rand(shape, generator=g) * 2
    ratio[1] = 0.0  # a masked sequence / tokens (the *_mask modes)
    for name, aggregation, loss_type in (("grpo", "sequence_mean", "grpo"), ("cispo", "token_mean", "cispo"),
                                         ("sapo", "sequence_mean", "sapo")):
        ours = _ours(registry, name, t, options={"beta": 0.04, "aggregation": aggregation}, is_weights=ratio)
        _same(ours, _trl(trl_grpo, t, loss_type=loss_type, is_ratio=ratio,
                         eps_high=5.0 if name == "cispo" else 0.2))


# ---- verl 0.9.1: core_algos' policy-loss functions -------------------------------------------------------


def _verl(verl_core, fn: str, t: dict, *, agg: str, advantages=None, **config):
    """verl's policy term and d / d logp; ``advantages`` (N, T) as verl takes them."""
    from verl.workers.config import ActorConfig, PolicyLossConfig

    loss_cfg = {k: config.pop(k) for k in list(config) if k in ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub",
                                                                   "kl_cov_ratio", "ppo_kl_coef")}
    cfg = ActorConfig(strategy="fsdp", rollout_n=3, ppo_micro_batch_size_per_gpu=1, loss_agg_mode=agg,
                      policy_loss=PolicyLossConfig(**loss_cfg), **config)
    logp = t["logp"].clone().requires_grad_()
    adv = t["advantages"].unsqueeze(1).expand(N, T) if advantages is None else advantages
    loss, _ = getattr(verl_core, fn)(old_log_prob=t["old_logp"], log_prob=logp, advantages=adv,
                                      response_mask=t["mask"], loss_agg_mode=agg, config=cfg)
    loss.backward()
    return loss.detach(), logp.grad


VERL_AGG = {"sequence_mean": "seq-mean-token-mean", "token_mean": "token-mean"}


@pytest.mark.parametrize("aggregation", list(VERL_AGG))
@pytest.mark.parametrize("per_token_advantages", [False, True])
def test_gspo_token_equals_verl_gspo(registry, verl_core, aggregation, per_token_advantages):
    """verl's ``gspo`` is the token form (TRL has none): s_i's value, each token's gradient."""
    t = _tensors(5)
    adv = t["token_advantages"] if per_token_advantages else None
    ours = _ours(registry, "gspo_token", t, advantages=adv,
                 options={"beta": 0.0, "aggregation": aggregation, "eps_low": 0.2, "eps_high": 0.28})
    _same(ours, _verl(verl_core, "compute_policy_loss_gspo", t, agg=VERL_AGG[aggregation], advantages=adv,
                      clip_ratio_low=0.2, clip_ratio_high=0.28))


def test_cispo_on_both_sides_equals_verl(registry, verl_core):
    """verl's (and EasyR1's) CISPO clips the weight to [1 - eps_low, 1 + eps_high]: ratio_min / ratio_max."""
    t = _tensors(6)
    ours = _ours(registry, "cispo", t, options={"beta": 0.0, "aggregation": "token_mean", "ratio_min": 0.8,
                                                "ratio_max": 1.2})
    assert ours[2]["clip_frac"] > 0
    _same(ours, _verl(verl_core, "compute_policy_loss_cispo", t, agg="token-mean", clip_ratio_low=0.2,
                      clip_ratio_high=0.2))


def test_sapo_equals_verl(registry, verl_core):
    t = _tensors(7, spread=0.8)
    ours = _ours(registry, "sapo", t, options={"beta": 0.0, "aggregation": "sequence_mean", "tau_neg": 1.5})
    _same(ours, _verl(verl_core, "compute_policy_loss_sapo", t, agg="seq-mean-token-mean", tau_pos=1.0,
                      tau_neg=1.5))


@pytest.mark.parametrize("aggregation", list(VERL_AGG))
@pytest.mark.parametrize("seed", [8, 9, 10])
def test_clip_cov_equals_verl_with_the_same_random_choice(registry, verl_core, aggregation, seed):
    """The covariance band and budget are set so that several tokens compete for the random choice."""
    t = _tensors(seed, spread=0.4)
    t["logp"] = t["logp"] * 2.0
    torch.manual_seed(seed)
    ours = _ours(registry, "clip_cov", t, options={"beta": 0.0, "aggregation": aggregation, "cov_fraction": 0.1,
                                                    "cov_low": 0.1, "cov_high": 5.0})
    assert ours[2]["cov_clip_frac"] > 0 and ours[2]["clip_frac"] > 0
    torch.manual_seed(seed)
    _same(ours, _verl(verl_core, "compute_policy_loss_clip_cov", t, agg=VERL_AGG[aggregation], clip_ratio_low=0.2,
                      clip_ratio_high=0.2, clip_cov_ratio=0.1, clip_cov_lb=0.1, clip_cov_ub=5.0))


@pytest.mark.parametrize("aggregation", list(VERL_AGG))
@pytest.mark.parametrize("fraction", [2e-4, 0.15])
def test_kl_cov_equals_verl(registry, verl_core, aggregation, fraction):
    t = _tensors(11, spread=0.4)
    ours = _ours(registry, "kl_cov", t, options={"beta": 0.0, "aggregation": aggregation, "cov_fraction": fraction,
                                                  "kl_coef": 0.5})
    assert ours[2]["kl_cov_frac"] > 0
    _same(ours, _verl(verl_core, "compute_policy_loss_kl_cov", t, agg=VERL_AGG[aggregation], kl_cov_ratio=fraction,
                      ppo_kl_coef=0.5))
