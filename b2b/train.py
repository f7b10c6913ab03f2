"""One policy-gradient loop for every algorithm of the course.

    history = train(policy, tokenizer, reward_model, train_prompts, RLConfig(steps=200),
                    eval_prompts=heldout, out="runs/reinforce")

Each step samples one completion per rollout (`b2b.rollout`), scores it with the reward model
(and the gold judge in the tiny world), shapes the reward, turns rewards into advantages
(`b2b.advantages`) and takes an optimizer step. Algorithms differ only in the learn phase, the
`# ALGO LOGIC` section: `reinforce_update` (REINFORCE, RLOO) and `clipped_update` (REINFORCE++,
GRPO, Dr. GRPO).
The settings are an `RLConfig` (`b2b.rl_config`). Metrics are namespaced (`reward/proxy_mean`,
`completions/distinct_2`, `time/step_s`, ...; see docs/glossary.md) and kept in a `History`. With
`out`, the run is also logged and checkpointed there (`b2b.runs`): `resume=out` continues a killed
run with the same results on a CPU, and `reuse=True` reads back a finished run of the same
settings instead of training it again.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

from b2b import runs
from b2b.advantages import (clipped_pg_loss, group_mean_baseline, grpo_advantages, grpo_loss,  # noqa: F401
                            kl_per_token, kl_shaped_reward, masked_mean, masked_whiten, moving_average_baseline,
                            reinforce_loss, returns_to_go, rloo_advantages, shaped_reward, token_level_rewards)
from b2b.errors import ConfigError, TrainingError
from b2b.evaluate import comparison_table, evaluator, logged_samples, summary  # noqa: F401 (re-exported)
from b2b.guards import check_finite, not_finite, oom_guard, smaller_batch
from b2b.memory import check_fits, estimate_rl_step, rl_hints
from b2b.metrics import step_metrics, sync_time
from b2b.models import add_lora, fingerprint, frozen_copy
from b2b.reward import policy_rewards  # noqa: F401 (re-exported)
from b2b.rl_config import ALGOS, CLIPPED_ALGOS, RLConfig  # noqa: F401 (re-exported)
from b2b.rollout import check_prompts_fit, decode_completions, rollout_logprobs, sample_completions
from b2b.runs import REWARD_FILE, RUN_FILES, History, latest_checkpoint, recorded_reward_fingerprint  # noqa: F401


# ----------------------------------------------------------------------------- the updates (ALGO LOGIC)

@dataclass
class Update:
    """What one learn phase did: the log-probs of the policy that sampled the batch (`logprobs`,
    for the KL and off-policy metrics), its entropy, the advantages (per sequence, or per token
    inside the mask), and per optimizer step the loss, gradient norm and clip fraction."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None
    advantages: torch.Tensor
    losses: list[float]
    grad_norms: list[float]
    clip_fracs: list[float] = field(default_factory=list)
    baseline: object = None


def reinforce_advantages(cfg: RLConfig, rewards, logp, ref_logp, mask, baseline):
    """(advantages (B,), new baseline state) of reinforce and rloo: the KL folded into the reward
    when kl_coef > 0, then the leave-one-out (rloo) or moving-average (reinforce) baseline:

        R_i = r_i - beta * sum_t kl_t(y_i),     A = rloo(R, k)  or  R - b
    """
    R = rewards
    if cfg.kl_coef > 0:
        R, _ = kl_shaped_reward(rewards, logp, ref_logp, mask, cfg.kl_coef, cfg.kl_estimator)
    if cfg.algo == "rloo":
        return rloo_advantages(R, cfg.k), baseline
    return moving_average_baseline(R, baseline, cfg.baseline_decay)


def reinforce_update(policy, opt, ro, rewards, ref_logp, baseline, cfg: RLConfig, step: int, ckpt: str) -> Update:
    """reinforce / rloo: one forward pass for log-probs, one optimizer step on the REINFORCE loss
    (summed over each completion's tokens, averaged over completions)."""
    policy.train()
    logp, entropy = rollout_logprobs(policy, ro, cfg.temperature, with_entropy=True)   # (B, C) each
    check_finite("log-probs", logp, step, ckpt)
    adv, baseline = reinforce_advantages(cfg, rewards, logp, ref_logp, ro.completion_mask, baseline)  # (B,)
    loss = reinforce_loss(adv, logp, ro.completion_mask)
    norm = _optimizer_step(policy, opt, loss, cfg.max_grad_norm, step, ckpt)
    return Update(logp.detach(), entropy, adv, [loss.item()], [norm], baseline=baseline)


def pp_advantages(cfg: RLConfig, rewards, old_logp, ref_logp, mask):
    """(B, C) token advantages of the clipped algorithms. REINFORCE++: token rewards (k1 KL at every
    token, the reward at the last; reinforce_pp_baseline: group-centred reward, no KL), returns to
    go, global whitening. GRPO / Dr. GRPO: each answer's group-relative advantage at all its tokens."""
    if cfg.algo in ("grpo", "dr_grpo"):
        return grpo_advantages(rewards, cfg.k, scale=cfg.algo == "grpo")[:, None].to(old_logp.dtype) * mask
    if cfg.algo == "reinforce_pp_baseline":
        kl, beta, r = torch.zeros_like(old_logp), 0.0, group_mean_baseline(rewards, cfg.k)
    else:
        kl = kl_per_token(old_logp, ref_logp, mask, cfg.kl_estimator) if cfg.kl_coef > 0 else torch.zeros_like(old_logp)
        beta, r = cfg.kl_coef, rewards
    returns = returns_to_go(token_level_rewards(r, kl, mask, beta), mask)
    return masked_whiten(returns, mask) if cfg.whiten else returns


def clipped_loss(cfg: RLConfig, logp, old_logp, adv, ref_logp, mask):
    """(loss, clip fraction) of a minibatch: PPO's clipped surrogate (REINFORCE++: a mean over the
    batch's tokens, plus for reinforce_pp_baseline beta times the token-mean k2 KL to the reference;
    GRPO: each answer's token mean with a k3 KL loss; Dr. GRPO: a sum over tokens / max_new_tokens)."""
    if cfg.algo in ("grpo", "dr_grpo"):
        return grpo_loss(logp, old_logp, ref_logp, adv, mask, cfg.clip, cfg.kl_coef,
                         cfg.max_new_tokens if cfg.algo == "dr_grpo" else None)
    loss, frac = clipped_pg_loss(logp, old_logp, adv, mask, cfg.clip)
    if cfg.algo == "reinforce_pp_baseline" and cfg.kl_coef > 0:
        loss = loss + cfg.kl_coef * masked_mean(kl_per_token(logp, ref_logp, mask, "k2"), mask)
    return loss, frac


def clipped_update(policy, opt, ro, rewards, ref_logp, cfg: RLConfig, step: int, ckpt: str) -> Update:
    """REINFORCE++, GRPO: `ppo_epochs` passes of `minibatches` optimizer steps over the rollout batch.
    The ratio's denominator and the advantages come once, from the log-probs of the policy that
    sampled the batch (`old_logp`): a forward pass before any update, or, with a single update,
    that update's own first forward pass (the same policy, one pass fewer)."""
    mask = ro.completion_mask
    entropy = adv = old_logp = None
    if cfg.ppo_epochs * cfg.minibatches > 1:
        with torch.no_grad():
            policy.eval()
            old_logp, entropy = rollout_logprobs(policy, ro, cfg.temperature, with_entropy=True)
        adv = pp_advantages(cfg, rewards, old_logp, ref_logp, mask)                     # (B, C)
    policy.train()
    n_mb = len(rewards) // cfg.minibatches
    losses, norms, fracs = [], [], []
    for _ in range(cfg.ppo_epochs):
        for j in range(cfg.minibatches):
            idx = slice(j * n_mb, (j + 1) * n_mb)
            sub = ro.select(idx)
            if adv is None:  # one update per batch: the rollout policy is the current one
                logp, entropy = rollout_logprobs(policy, sub, cfg.temperature, with_entropy=True)
                old_logp = logp.detach()
                adv = pp_advantages(cfg, rewards, old_logp, ref_logp, mask)
            else:
                logp = rollout_logprobs(policy, sub, cfg.temperature)
            check_finite("log-probs", logp, step, ckpt)
            loss, frac = clipped_loss(cfg, logp, old_logp[idx], adv[idx],
                                      None if ref_logp is None else ref_logp[idx], sub.completion_mask)
            norms.append(_optimizer_step(policy, opt, loss, cfg.max_grad_norm, step, ckpt))
            losses.append(loss.item())
            fracs.append(frac.item())
    return Update(old_logp, entropy, adv[mask.bool()], losses, norms, fracs)


def _optimizer_step(policy, opt, loss, max_grad_norm: float, step: int, ckpt: str) -> float:
    """One optimizer step on `loss` (checked finite), gradients clipped; returns the norm before clipping."""
    check_finite("loss", loss, step, ckpt)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    check_finite("gradient norm", grad_norm, step, ckpt)
    opt.step()
    return grad_norm.item()


# ----------------------------------------------------------------------------- one step: sample, score, learn

def rl_step(policy, tokenizer, reward_model, prompts: list[str], opt, gen: torch.Generator, baseline,
            cfg: RLConfig, world: bool, step: int, ckpt: str = "none", ref=None) -> tuple[dict, list[str], object]:
    """One policy-gradient step on `prompts` (k consecutive copies of each prompt when cfg.k > 1);
    returns (metrics, completions, new baseline state). `ref` is the frozen reference policy (needed
    when cfg.kl_coef > 0)."""
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
    # 2. score: proxy reward (B,), clamped, then shaped; the reference's log-probs (B, C) for the KL
    texts, finished = decode_completions(tokenizer, ro), ro.finished(tokenizer.eos_token_id)
    proxy = policy_rewards(reward_model, ro, prompts, texts, finished, cfg.readout)
    check_finite("reward", proxy, step, ckpt)
    clipped = (proxy.abs() > cfg.reward_clip).float() if cfg.reward_clip else torch.zeros_like(proxy)
    if cfg.reward_clip:
        proxy = proxy.clamp(-cfg.reward_clip, cfg.reward_clip)
    rewards, rep = shaped_reward(proxy, ro.completion_ids, ro.completion_mask, cfg.ngram_penalty, cfg.ngram)
    ref_logp = None
    if ref is not None:
        with torch.no_grad():
            ref_logp = rollout_logprobs(ref, ro, cfg.temperature)
        check_finite("reference log-probs", ref_logp, step, ckpt)
    clock.append(sync_time(policy))
    # 3. learn: advantages and one (REINFORCE, RLOO) or several (REINFORCE++, GRPO) optimizer steps
    if cfg.algo in CLIPPED_ALGOS:
        upd = clipped_update(policy, opt, ro, rewards, ref_logp, cfg, step, ckpt)
    else:
        upd = reinforce_update(policy, opt, ro, rewards, ref_logp, baseline, cfg, step, ckpt)
        baseline = upd.baseline
    clock.append(sync_time(policy))
    m = step_metrics(cfg, ro, texts, finished, proxy, rewards, rep, clipped, ref_logp, upd, clock)
    if world:
        from b2b.tinyworld.gold import judge

        m["reward/gold_mean"] = statistics.fmean(judge(p, t, f).rating for p, t, f in zip(prompts, texts,
                                                                                             finished.tolist()))
    if cfg.algo == "reinforce":
        m["reward/baseline"] = baseline
    return m, texts, baseline


# ----------------------------------------------------------------------------- the loop

def train(policy, tokenizer, reward_model, prompts: list[str], cfg: RLConfig | None = None, *,
          eval_prompts: list[str] | None = None, world: bool = True, out=None, resume=None,
          overwrite: bool = False, reuse: bool = False, progress: bool = True, eval_batch_size: int = 128) -> History:
    """Train `policy` in place with policy gradients; returns the run's `History`.

    prompts: training prompts (user messages), drawn uniformly with replacement each step.
    eval_prompts: held-out prompts evaluated before training, every `cfg.eval_every` steps and
        after the last step (the first `cfg.eval_prompts` of them).
    world: the prompts are tiny-world prompts, so the gold judge rates every completion.
    out: run directory for `metrics.jsonl`, `samples.jsonl` and `checkpoints/` (`b2b.runs`).
    resume: a run directory (or checkpoint) to continue from; the policy passed in is overwritten
        with the checkpoint's weights and training continues at the next step.
    eval_batch_size: held-out prompts sampled together (on a GPU at most cfg.batch_size).
    reuse: `out` holding this run (same settings, same reward model) is read back when finished
        (the policy takes its final weights where they were kept) or continued when not; holding
        another run, it is started over.
    """
    steps = train_steps(policy, tokenizer, reward_model, prompts, cfg, eval_prompts=eval_prompts, world=world,
                        out=out, resume=resume, overwrite=overwrite, reuse=reuse, progress=progress,
                        eval_batch_size=eval_batch_size)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def train_steps(policy, tokenizer, reward_model, prompts: list[str], cfg: RLConfig | None = None, *,
                eval_prompts=None, world: bool = True, out=None, resume=None, overwrite: bool = False,
                reuse: bool = False, progress: bool = True, eval_batch_size: int = 128):
    """`train` one step at a time: a generator that yields each step's metrics row once the step
    (and its logging, evaluation and checkpoint) is done, and returns the run's `History`. The
    arguments are `train`'s. (`b2b bench` interleaves b2b's steps with TRL's trainer this way.)"""
    from tqdm.auto import tqdm

    cfg = (cfg or RLConfig()).validate()
    if not prompts:
        raise ConfigError("train: expected at least one training prompt")
    eval_prompts = (eval_prompts or [])[: cfg.eval_prompts or None]
    prompt_tokens = check_prompts_fit(policy, tokenizer, reward_model, prompts, eval_prompts, cfg.max_new_tokens)
    reward_id = fingerprint(reward_model) if out is not None or resume is not None else None
    run = runs.open_run(out, cfg, reward_id, resume, overwrite, reuse)
    if run.done is not None:  # this very run, finished before: read back
        return runs.read_back(policy, run.out, cfg, run.done, progress)
    device = next(policy.parameters()).device
    if isinstance(reward_model, torch.nn.Module):
        reward_model.eval()
    gen = torch.Generator(device).manual_seed(cfg.seed)
    ref = None  # the starting policy, frozen (taken before any resume)
    if cfg.kl_coef > 0 or cfg.track_kl:
        ref = frozen_copy(policy, dtype=cfg.ref_dtype)  # auto: pick_dtype, fp32 on the CPU, fp16 / bf16 on a GPU
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = add_lora(policy, cfg) if cfg.lora_r else policy
    check_fits(estimate_rl_step(policy, reward_model, ref, cfg, prompt_tokens), device,
               f"the RL step ({cfg.batch_size} rollouts of up to {prompt_tokens} + {cfg.max_new_tokens} tokens)",
               rl_hints(cfg))
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    start, baseline, history = 0, None, History()
    if run.resume is not None:
        start, baseline, history = runs.load_checkpoint(run.resume, policy, opt, gen)
    runs.start_logs(run.out, cfg, reward_id, history)
    last_good = str(latest_checkpoint(run.out) or "none") if run.out is not None else "none"

    def log(source: str, row: dict) -> None:
        getattr(history, source).append(row)
        runs.append(run.out, source, row)

    if device.type == "cuda":  # on a GPU no evaluation batch outgrows the training step the memory estimate checked
        eval_batch_size = min(eval_batch_size, cfg.batch_size)
    evaluate = evaluator(policy, tokenizer, reward_model, eval_prompts, cfg, world, eval_batch_size, ref)
    if start == 0 and eval_prompts:
        log("evals", evaluate(0, last_good))
    bar = tqdm(range(start + 1, cfg.steps + 1), desc=cfg.algo, initial=start, total=cfg.steps, disable=not progress)
    smaller = smaller_batch(cfg.batch_size, math.lcm(cfg.k, cfg.minibatches))
    for step in bar:
        idx = torch.randint(len(prompts), (cfg.batch_size // cfg.k,), generator=gen, device=device).tolist()
        batch = [prompts[i] for i in idx for _ in range(cfg.k)]  # groups of k samples of one prompt
        m, texts, baseline = oom_guard(lambda: rl_step(policy, tokenizer, reward_model, batch, opt, gen, baseline,
                                                       cfg, world, step, last_good, ref),
                                       step, "the RL step", "batch_size", cfg.batch_size, smaller, last_good)
        log("steps", {"step": step, **m})
        if cfg.sample_every and step % cfg.sample_every == 0:
            for s in logged_samples(batch, texts, step, cfg.n_samples, world):
                log("samples", s)
        if eval_prompts and (step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            log("evals", evaluate(step, last_good))
        if run.out is not None and cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            last_good = str(runs.save_checkpoint(run.out, step, policy, opt, gen, baseline, history, cfg,
                                                 cfg.keep_checkpoints))
        bar.set_postfix({"proxy": f"{m['reward/proxy_mean']:.2f}",
                         **({"gold": f"{m['reward/gold_mean']:.2f}"} if world else {})})
        yield history.steps[-1]
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_disable()
    policy.eval()
    return history


