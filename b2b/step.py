"""One policy-gradient step, the same for every algorithm of the course: sample, score, shape,
advantages, loss, optimizer step.

    m, texts, state = rl_step(policy, tok, rm, prompts, opt, gen, state, cfg, world=True, step=1, ref=ref)

Everything that differs between REINFORCE, RLOO, REINFORCE++, GRPO and the rest is the
algorithm's record (`b2b.algorithms`): its `advantages` and its `loss`, and whether it takes one
update per batch or PPO's epochs of minibatches (`clipped`). The run around the step (run
directory, resume, checkpoints, evaluations, LoRA, the memory check) is `b2b.train`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from b2b.advantages import shaped_reward
from b2b.algorithms import Algorithm, get
from b2b.errors import ConfigError, TrainingError
from b2b.guards import check_finite, not_finite
from b2b.metrics import step_metrics, sync_time
from b2b.reward import policy_rewards
from b2b.rl_config import RLConfig
from b2b.rollout import decode_completions, rollout_logprobs, sample_completions


def rl_step(policy, tokenizer, reward_model, prompts: list[str], opt, gen: torch.Generator, state,
            cfg: RLConfig, world: bool, step: int, ckpt: str = "none", ref=None,
            algorithm: Algorithm | None = None, precision=None) -> tuple[dict, list[str], object]:
    """One step on `prompts` (k consecutive copies of each prompt when cfg.k > 1); returns (metrics,
    completions, the algorithm's new state). `ref`: the frozen reference policy (kl_coef > 0 needs
    it); `algorithm`: its record (default: cfg.algo's); `ckpt` is named in any error; `precision`:
    a `b2b.precision.Precision` for the learn phase's passes (default fp32)."""
    algo = get(algorithm or cfg.algo)
    if cfg.kl_coef > 0 and ref is None:
        raise ConfigError("rl_step: kl_coef > 0 needs the reference policy (ref=)")
    clock = [sync_time(policy)]
    # 1. sample: B completions, ids (B, C) and mask (B, C), from the current policy
    policy.eval()
    try:
        ro = sample_completions(policy, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, gen,
                                cfg.repetition_penalty)
    except TrainingError:  # sampling found non-finite probabilities: name the step
        raise not_finite("sampling distribution", step, ckpt) from None
    clock.append(sync_time(policy))
    # 2. score: the reward model's proxy reward (B,), clamped to +-reward_clip
    texts, finished = decode_completions(tokenizer, ro), ro.finished(tokenizer.eos_token_id)
    proxy = check_finite("reward", policy_rewards(reward_model, ro, prompts, texts, finished, cfg.readout), step, ckpt)
    clipped = (proxy.abs() > cfg.reward_clip).float() if cfg.reward_clip else torch.zeros_like(proxy)
    proxy = proxy.clamp(-cfg.reward_clip, cfg.reward_clip) if cfg.reward_clip else proxy
    # 3. shape: the repeated n-gram penalty; the reference's log-probs (B, C) for the KL
    rewards, rep = shaped_reward(proxy, ro.completion_ids, ro.completion_mask, cfg.ngram_penalty, cfg.ngram)
    ref_logp = None
    if ref is not None:
        with torch.no_grad():
            ref_logp = check_finite("reference log-probs", rollout_logprobs(ref, ro, cfg.temperature), step, ckpt)
    clock.append(sync_time(policy))
    # 4-6. advantages, loss, optimizer step(s): the algorithm's record
    upd = learn(policy, opt, ro, rewards, ref_logp, state, cfg, algo, step, ckpt, precision)
    clock.append(sync_time(policy))
    m = step_metrics(cfg, ro, texts, finished, proxy, rewards, rep, clipped, ref_logp, upd, clock)
    if world:  # the tiny world's gold judge rates what the reward model only estimates
        from b2b.tinyworld.gold import judge

        m["reward/gold_mean"] = statistics.fmean(judge(p, t, f).rating
                                                 for p, t, f in zip(prompts, texts, finished.tolist()))
    if upd.state is not None:
        m["reward/baseline"] = upd.state
    return m, texts, upd.state


@dataclass
class Update:
    """What one learn phase did: the log-probs of the policy that sampled the batch (`logprobs`,
    for the KL and off-policy metrics), its entropy, the advantages (per answer, or per token inside
    the mask), per optimizer step the loss, gradient norm and clip fraction, and the algorithm's
    new state."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None
    advantages: torch.Tensor
    losses: list[float]
    grad_norms: list[float]
    clip_fracs: list[float] = field(default_factory=list)
    state: object = None
    skipped: int = 0
    """Optimizer steps skipped because fp16's scaled gradients overflowed (`b2b.precision`); their
    norms are not in `grad_norms`."""


def learn(policy, opt, ro, rewards, ref_logp, state, cfg: RLConfig, algo: Algorithm, step: int, ckpt: str,
          precision=None) -> Update:
    """The algorithm's advantages, then its loss and an optimizer step: once per batch, or (a clipped
    algorithm) `ppo_epochs` passes of `minibatches` steps. The ratio's denominator and the advantages
    come once, from the log-probs of the policy that sampled the batch: a forward pass before any
    update, or, with a single update, that update's own forward pass (the same policy, one pass fewer).
    `precision`: the policy's forward passes and the loss under its autocast, the backward pass and
    step through it (`b2b.precision`; default fp32)."""
    from b2b.precision import FP32

    prec = precision or FP32
    mask, p = ro.completion_mask, algo.fns()
    epochs, n_mb = (cfg.ppo_epochs, cfg.minibatches) if algo.clipped else (1, 1)
    old_logp = entropy = adv = None
    if epochs * n_mb > 1:
        with torch.no_grad(), prec.autocast():
            policy.eval()
            old_logp, entropy = rollout_logprobs(policy, ro, cfg.temperature, with_entropy=True)
        adv, state = algo.advantages(p, rewards, old_logp, ref_logp, mask, cfg, state)
    policy.train()
    size = len(rewards) // n_mb
    losses, norms, fracs, skipped = [], [], [], 0
    for _ in range(epochs):
        for j in range(n_mb):
            idx = slice(j * size, (j + 1) * size)
            sub = ro.select(idx)
            with prec.autocast():
                if adv is None:  # one update per batch: the policy that sampled is the current one
                    logp, entropy = rollout_logprobs(policy, sub, cfg.temperature, with_entropy=True)
                    old_logp = logp.detach()
                    adv, state = algo.advantages(p, rewards, old_logp, ref_logp, mask, cfg, state)
                else:
                    logp = rollout_logprobs(policy, sub, cfg.temperature)
                check_finite("log-probs", logp, step, ckpt)
                loss, frac = algo.loss(p, logp, old_logp[idx], adv[idx], None if ref_logp is None else ref_logp[idx],
                                       sub.completion_mask, cfg)
            norm = optimizer_step(policy, opt, loss, cfg.max_grad_norm, step, ckpt, prec)
            if norm is None:
                skipped += 1
            else:
                norms.append(norm)
            losses.append(loss.item())
            if frac is not None:
                fracs.append(float(frac))
    return Update(old_logp, entropy, adv if adv.dim() == 1 else adv[mask.bool()], losses, norms, fracs, state, skipped)


def optimizer_step(policy, opt, loss, max_grad_norm: float, step: int, ckpt: str, precision=None) -> float | None:
    """One optimizer step on `loss` (checked finite), gradients clipped; returns the norm before
    clipping, or None when fp16's gradient scaler skipped the step (its scaled gradients overflowed;
    `b2b.precision`, default fp32). A non-finite gradient norm is an error otherwise."""
    from b2b.precision import FP32

    precision = precision or FP32
    check_finite("loss", loss, step, ckpt)
    opt.zero_grad(set_to_none=True)
    precision.backward(loss)
    grad_norm = precision.clip(opt, policy.parameters(), max_grad_norm)
    if precision.scaler is None:  # fp32 / bf16: a non-finite gradient is an error, before any step
        check_finite("gradient norm", grad_norm, step, ckpt)
    return grad_norm.item() if precision.step(opt) else None
