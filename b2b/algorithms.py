"""The algorithms of the course, one record each: what differs between REINFORCE, RLOO,
REINFORCE++, REINFORCE++-baseline, GRPO and Dr. GRPO, and nothing else.

    algo = get("grpo")               # the record behind RLConfig(algo="grpo")
    algo.parent                      # 'reinforce_pp_baseline': GRPO is written as a change to it
    mine = get("rloo").using(rloo_advantages=my_rloo_advantages)   # the learner's piece, checked once
    train(policy, tok, rm, prompts, rl_config(profile, "rloo"), algorithm=mine)

The training step (`b2b.step.rl_step`) samples, scores and shapes the same way for every method;
a record supplies the two parts that differ, each with one signature:

    advantages(p, rewards (B,), logprobs (B, C), ref_logprobs (B, C) | None, mask (B, C), cfg, state)
        -> (advantages: (B,) per answer or (B, C) per token, new state)
    loss(p, logprobs (b, C), old_logprobs (b, C), advantages, ref_logprobs | None, mask (b, C), cfg)
        -> (loss, clip fraction or None)

`logprobs` in `advantages` are those of the policy that sampled the batch (detached); `loss` sees
one minibatch with gradients. `state` is what the method carries from step to step (REINFORCE's
moving-average baseline; None for the others). `p` holds the record's `parts`, the small pure
functions of `b2b.advantages` it is built from, named as their exercises are: a learner's own
function replaces one with `using`, which checks it first (`b2b.exercises`).

Every list of algorithms in the package is read from `ALGORITHMS`: RLConfig's choices, the
recipes (`settings`), `quick`'s step times, the showdown's methods, the memory table's stages, the
benchmark's default, the CLI's choices and the TRL bridge. Adding a method is one record, one
loss and one test row (docs/package.md#adding-an-algorithm); `register` adds it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import Callable, Mapping

import torch

from b2b import advantages as A
from b2b.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    """One method of the course. Write a new one as a change to its parent: `derive(parent, ...)`."""

    name: str
    """Its `RLConfig.algo` (and CLI) name."""
    label: str
    """Its name in tables and plots."""
    advantages: Callable
    """(p, rewards, logprobs, ref_logprobs, mask, cfg, state) -> (advantages, state): see the module doc."""
    loss: Callable
    """(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg) -> (loss, clip fraction or None)."""
    parts: Mapping[str, Callable] = field(default_factory=dict)
    """The pure functions `advantages` and `loss` call, by exercise name (`using` swaps one)."""
    parent: str | None = None
    """The method this one is written as a change to (None: REINFORCE itself)."""
    groups: bool = False
    """Its baseline is the other samples of the same prompt: it needs k >= 2."""
    clipped: bool = False
    """PPO's clipped ratio: `ppo_epochs` x `minibatches` optimizer steps per rollout batch (else one)."""
    settings: Mapping[str, object] = field(default_factory=dict)
    """Its recipe in the tiny profile, over RLConfig's defaults (`b2b.recipes.rl_config`; docs/tuning.md)."""
    quick_step_s: float | None = None
    """Seconds per RL step in `tiny` at `settings` on a 2-core CPU (`b2b.recipes.quick`), rounded up
    from the shipped records' medians (data/runs/)."""
    showdown: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """Its cells in notebook 08's showdown: label -> overrides of `settings`."""
    memory_table: bool = False
    """Measured in the T4 memory table (`b2b memory`)."""
    bench: bool = False
    """Timed by `b2b bench` by default."""
    trl_trainer: str | None = None
    """The maintained TRL trainer that runs it (`b2b.tools.trl_bridge`, `b2b scale-out`), if any."""
    notebook: str = ""
    """Where the course teaches it."""

    def using(self, **parts: Callable) -> "Algorithm":
        """This method with some of its parts replaced by the learner's own (e.g.
        `reinforce_loss=my_reinforce_loss`); each is checked first on its exercise's hand-made cases,
        and a wrong one is a one-line ConfigError naming the mistake."""
        unknown = sorted(set(parts) - set(self.parts))
        if unknown:
            raise ConfigError(f"{self.name}: no part named {unknown[0]!r} (its parts: {', '.join(self.parts)})")
        from b2b.exercises import mistake

        for name, fn in parts.items():
            why = mistake(name, fn)
            if why is not None:
                raise ConfigError(f"{self.name}: your {name} ({getattr(fn, '__name__', fn)}) fails its check: {why}")
        return dataclasses.replace(self, parts=MappingProxyType({**self.parts, **parts}))

    def updates(self, cfg) -> int:
        """Optimizer steps per rollout batch under `cfg`: ppo_epochs x minibatches if clipped, else one."""
        return cfg.ppo_epochs * cfg.minibatches if self.clipped else 1

    def fns(self) -> SimpleNamespace:
        """The parts as attributes: the `p` that `advantages` and `loss` receive."""
        return SimpleNamespace(**self.parts)


def derive(parent: Algorithm, *, name: str, label: str, settings: Mapping | None = None, parts: Mapping | None = None,
           **changes) -> Algorithm:
    """A new method written as a change to `parent`: its parts, settings, flags, step time and
    functions are the parent's unless changed (`settings` and `parts` are merged into the
    parent's); its showdown cells, memory-table and bench rows and TRL trainer are its own."""
    own = dict(showdown={}, memory_table=False, bench=False, trl_trainer=None, notebook="")
    changes = {**own, **changes}
    changes["showdown"] = MappingProxyType(dict(changes["showdown"]))
    return dataclasses.replace(parent, name=name, label=label, parent=parent.name,
                               settings=MappingProxyType({**parent.settings, **(settings or {})}),
                               parts=MappingProxyType({**parent.parts, **(parts or {})}), **changes)


ALGORITHMS: dict[str, Algorithm] = {}
"""name -> record, in the course's order."""


def register(algo: Algorithm) -> Algorithm:
    """Add a method (or replace one of the same name); RLConfig, the recipes and the tools then know it."""
    ALGORITHMS[algo.name] = algo
    return algo


def get(name) -> Algorithm:
    """The record of `name` (a record passes through); an unknown name is a one-line ConfigError."""
    if isinstance(name, Algorithm):
        return name
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown algorithm {name!r} (expected one of: {', '.join(ALGORITHMS)})") from None


def names(**flags) -> tuple[str, ...]:
    """The registered names, in order; `names(clipped=True)`, `names(memory_table=True)`: those with the flag."""
    return tuple(a.name for a in ALGORITHMS.values() if all(getattr(a, f) == v for f, v in flags.items()))


# ----------------------------------------------------------------------------- REINFORCE (notebook 03)

def kl_in_reward(rewards, logprobs, ref_logprobs, mask, cfg):
    """R = r - beta * sum_t kl_t (`b2b.advantages.kl_shaped_reward`) when kl_coef > 0, else r."""
    if cfg.kl_coef > 0:
        return A.kl_shaped_reward(rewards, logprobs, ref_logprobs, mask, cfg.kl_coef, cfg.kl_estimator)[0]
    return rewards


def reinforce_advantages(p, rewards, logprobs, ref_logprobs, mask, cfg, state):
    """A_i = R_i - b with R the KL-shaped reward and b the moving average of past batch means."""
    return p.moving_average_baseline(kl_in_reward(rewards, logprobs, ref_logprobs, mask, cfg), state,
                                     cfg.baseline_decay)


def reinforce_loss(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg):
    """L = -(1/B) sum_i A_i sum_t m_it log pi(y_it): one update per batch, nothing clipped."""
    return p.reinforce_loss(advantages, logprobs, mask), None


REINFORCE = register(Algorithm(
    name="reinforce", label="REINFORCE", advantages=reinforce_advantages, loss=reinforce_loss,
    parts=MappingProxyType({"moving_average_baseline": A.moving_average_baseline, "reinforce_loss": A.reinforce_loss}),
    settings=MappingProxyType({}), quick_step_s=1.2, memory_table=True, bench=True, notebook="03",
    showdown=MappingProxyType({"vanilla REINFORCE": {}, "repetition penalty 1.2": {"repetition_penalty": 1.2},
                               "vanilla REINFORCE + KL": {"kl_coef": 0.5}})))

# ----------------------------------------------------------------------------- RLOO (notebook 06) = REINFORCE
# with the leave-one-out baseline over k samples of each prompt in place of the moving average


def rloo_advantages(p, rewards, logprobs, ref_logprobs, mask, cfg, state):
    """A_i = R_i - mean of the other k - 1 samples' R (R the KL-shaped reward)."""
    return p.rloo_advantages(kl_in_reward(rewards, logprobs, ref_logprobs, mask, cfg), cfg.k), state


RLOO = register(derive(
    REINFORCE, name="rloo", label="RLOO", advantages=rloo_advantages, groups=True,
    parts={"rloo_advantages": A.rloo_advantages}, settings=dict(k=4, kl_coef=0.5, steps=600), quick_step_s=1.6,
    memory_table=True, bench=True, trl_trainer="RLOOTrainer", notebook="06",
    showdown={"RLOO k=4, no KL": {"k": 4, "kl_coef": 0.0}, "RLOO k=2 + KL": {"k": 2}, "RLOO k=4 + KL": {"k": 4}}))

# ----------------------------------------------------------------------------- REINFORCE++ (notebook 07) =
# REINFORCE with the k1 KL at every token, returns to go, advantages whitened over the batch and
# PPO's clipped ratio over several minibatch updates


def reinforce_pp_advantages(p, rewards, logprobs, ref_logprobs, mask, cfg, state):
    """(B, C): r_t = -beta kl_t + [t = last] r, G_t = sum_{s >= t} r_s, whitened over the batch's tokens."""
    if cfg.kl_coef > 0:
        kl = A.kl_per_token(logprobs, ref_logprobs, mask, cfg.kl_estimator)
    else:
        kl = torch.zeros_like(logprobs)
    returns = p.returns_to_go(A.token_level_rewards(rewards, kl, mask, cfg.kl_coef), mask)
    return (p.masked_whiten(returns, mask) if cfg.whiten else returns), state


def clipped_loss(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg):
    """PPO's clipped surrogate, a mean over the minibatch's tokens (`b2b.advantages.clipped_pg_loss`)."""
    return p.clipped_loss(logprobs, old_logprobs, advantages, mask, cfg.clip)


REINFORCE_PP = register(derive(
    REINFORCE, name="reinforce_pp", label="REINFORCE++", advantages=reinforce_pp_advantages, loss=clipped_loss,
    clipped=True, parts={"returns_to_go": A.returns_to_go, "masked_whiten": A.masked_whiten,
                         "clipped_loss": A.clipped_pg_loss},
    settings=dict(k=1, kl_coef=1.2, ppo_epochs=1, minibatches=2, steps=600), quick_step_s=2.2,
    memory_table=True, bench=True, notebook="07", showdown={"REINFORCE++": {}}))

# ----------------------------------------------------------------------------- REINFORCE++-baseline = REINFORCE++
# with each prompt's group mean subtracted from the reward and the KL as a k2 loss, not a reward


def reinforce_pp_baseline_advantages(p, rewards, logprobs, ref_logprobs, mask, cfg, state):
    """(B, C): the group-centred reward r_i - mean_g r at the last token, returns to go, whitened."""
    no_kl = torch.zeros_like(logprobs)
    returns = p.returns_to_go(A.token_level_rewards(A.group_mean_baseline(rewards, cfg.k), no_kl, mask, 0.0), mask)
    return (p.masked_whiten(returns, mask) if cfg.whiten else returns), state


def clipped_loss_k2(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg):
    """The clipped surrogate + beta * the token mean of the k2 KL to the reference."""
    loss, frac = clipped_loss(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg)
    if cfg.kl_coef > 0:
        loss = loss + cfg.kl_coef * A.masked_mean(A.kl_per_token(logprobs, ref_logprobs, mask, "k2"), mask)
    return loss, frac


REINFORCE_PP_BASELINE = register(derive(
    REINFORCE_PP, name="reinforce_pp_baseline", label="REINFORCE++-baseline", groups=True,
    advantages=reinforce_pp_baseline_advantages, loss=clipped_loss_k2, settings=dict(k=4, kl_coef=0.5),
    memory_table=True, trl_trainer="GRPOTrainer", notebook="07", showdown={"REINFORCE++-baseline": {}}))

# ----------------------------------------------------------------------------- GRPO = REINFORCE++-baseline with
# the group's standard deviation in place of the batch whitening, a k3 KL loss and each answer's
# token mean; Dr. GRPO = GRPO without the standard deviation and with one constant length


def grpo_advantages(p, rewards, logprobs, ref_logprobs, mask, cfg, state):
    """(B, C): (r_i - mean_g r) / (std_g r + eps) at every token of answer i."""
    return p.grpo_advantages(rewards, cfg.k)[:, None].to(logprobs.dtype) * mask, state


def grpo_loss(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg):
    """Each answer's token mean of the clipped term + beta k3 (`b2b.advantages.grpo_loss`)."""
    return A.grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, cfg.clip, cfg.kl_coef)


GRPO = register(derive(
    REINFORCE_PP_BASELINE, name="grpo", label="GRPO", advantages=grpo_advantages, loss=grpo_loss,
    parts={"grpo_advantages": A.grpo_advantages}, notebook="07", showdown={"GRPO": {}}))


def dr_grpo_advantages(p, rewards, logprobs, ref_logprobs, mask, cfg, state):
    """(B, C): r_i - mean_g r at every token of answer i (no standard deviation)."""
    return A.grpo_advantages(rewards, cfg.k, scale=False)[:, None].to(logprobs.dtype) * mask, state


def dr_grpo_loss(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg):
    """GRPO's per-token terms summed over the batch and divided by B * max_new_tokens."""
    return A.grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, cfg.clip, cfg.kl_coef,
                       cfg.max_new_tokens)


DR_GRPO = register(derive(GRPO, name="dr_grpo", label="Dr. GRPO", advantages=dr_grpo_advantages, loss=dr_grpo_loss,
                          notebook="07", showdown={"Dr. GRPO": {}}))


# ----------------------------------------------------------------------------- a new record's first check

def check_algorithm(algo: Algorithm, cfg) -> None:
    """Run `algo`'s advantages and loss once on a hand-made batch (two groups of k answers of
    unequal lengths, padding on the right) before it trains anything; a one-line ConfigError names
    the classic mistake: a wrong shape, inf or nan, advantages or a loss that read the padding, a
    loss that sends gradient into the advantages or the old log-probs (they must be detached), or
    one that sends none into the log-probs."""
    k = max(cfg.k, 2) if algo.groups else cfg.k
    B, C = 2 * k, 5
    g = torch.Generator().manual_seed(0)
    lengths = [C - i % 3 for i in range(B)]
    mask = (torch.arange(C)[None, :] < torch.tensor(lengths)[:, None]).float()
    logp = (-torch.rand(B, C, generator=g) * mask).requires_grad_()
    old = (logp.detach() + 0.05 * torch.randn(B, C, generator=g) * mask).requires_grad_()
    ref = logp.detach() + 0.1 * torch.randn(B, C, generator=g) * mask
    rewards = torch.randn(B, generator=g)
    c = dataclasses.replace(cfg, k=k)
    name = f"algorithm {algo.name!r}"
    try:
        adv, _ = algo.advantages(algo.fns(), rewards, old.detach(), ref, mask, c, None)
    except Exception as e:
        raise ConfigError(f"{name}: its advantages raised {type(e).__name__}: {e}") from None
    if not isinstance(adv, torch.Tensor) or tuple(adv.shape) not in ((B,), (B, C)):
        raise ConfigError(f"{name}: its advantages should have shape ({B},) per answer or ({B}, {C}) per token, "
                          f"got {getattr(adv, 'shape', type(adv).__name__)}")
    if not bool(torch.isfinite(adv).all()):
        raise ConfigError(f"{name}: its advantages hold inf or nan on a batch of finite rewards")
    if adv.dim() == 2 and bool((adv * (1 - mask)).abs().gt(0).any()):
        raise ConfigError(f"{name}: its per-token advantages are not zero on the padding (multiply by the mask)")
    if adv.dim() == 2:  # junk on the padding: a loss that reads it is found by its gradient there
        adv = adv + (1 - mask) * 3.0
    adv = adv.detach().clone().requires_grad_()
    try:
        loss, _ = algo.loss(algo.fns(), logp, old, adv, ref, mask, c)
    except Exception as e:
        raise ConfigError(f"{name}: its loss raised {type(e).__name__}: {e}") from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not bool(torch.isfinite(loss).all()):
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) and loss.numel() != 1 else repr(loss)
        raise ConfigError(f"{name}: its loss should be one finite number (a mean or sum over the batch), got {got}")
    if not loss.requires_grad:
        raise ConfigError(f"{name}: its loss carries no gradient to the log-probs: do not detach them")
    d_logp, d_old, d_adv = torch.autograd.grad(loss.sum(), (logp, old, adv), allow_unused=True)
    if d_adv is not None and bool(d_adv.ne(0).any()):
        raise ConfigError(f"{name}: its loss sends gradient into the advantages: use advantages.detach()")
    if d_old is not None and bool(d_old.ne(0).any()):
        raise ConfigError(f"{name}: its loss sends gradient into old_logprobs: detach them (the old policy is a "
                          "constant)")
    if d_logp is None or not bool(d_logp.ne(0).any()):
        raise ConfigError(f"{name}: its loss carries no gradient to the log-probs: do not detach them")
    if bool((d_logp * (1 - mask)).ne(0).any()):
        raise ConfigError(f"{name}: its loss has gradient on padding tokens: multiply by the mask")
