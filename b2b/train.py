"""One policy-gradient loop for every algorithm of the course.

    history = train(policy, tokenizer, reward_model, train_prompts, RLConfig(steps=200),
                    eval_prompts=heldout, out="runs/reinforce")

Each step: draw `batch_size` prompts, sample one completion each (`b2b.rollout`), score them with
the reward model (and the gold judge in the tiny world), shape the reward (optional n-gram
repetition penalty), turn rewards into advantages (`b2b.advantages`), take one optimizer step.
Metrics are namespaced (`reward/proxy_mean`, `completions/distinct_2`, `time/step_s`, ...; see the
README's glossary) and kept in a `History`; with `out`, also appended to `out/metrics.jsonl`, and
the run is checkpointed every `checkpoint_every` steps so `resume=out` continues a killed run with
the same results on CPU.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from b2b.advantages import (KL_ESTIMATORS, clipped_pg_loss, group_mean_baseline, kl_per_token, kl_shaped_reward,
                            masked_mean, masked_whiten, moving_average_baseline, reinforce_loss, returns_to_go,
                            rloo_advantages, shaped_reward, token_level_rewards)
from b2b.errors import ConfigError, TrainingError
from b2b.metrics import distinct_n
from b2b.models import fingerprint
from b2b.reward import READOUTS, scalar_reward
from b2b.rollout import decode_completions, rollout_logprobs, rollout_reward_scores, sample_completions

ALGOS = ("reinforce", "rloo", "reinforce_pp", "reinforce_pp_baseline")
"""reinforce: moving-average baseline (notebook 03); rloo: leave-one-out baseline over k samples per
prompt (notebook 06); reinforce_pp: REINFORCE++ with token-level k1 KL in the reward, global
advantage normalisation and PPO clipping (notebook 07); reinforce_pp_baseline: its group-mean
variant with a k2 KL loss."""


@dataclass
class RLConfig:
    """How a policy is trained (defaults: notebook 03, vanilla REINFORCE in the tiny profile)."""

    algo: str = "reinforce"
    steps: int = 150
    batch_size: int = 64
    """Rollouts (prompts, one completion each) per step."""
    lr: float = 2e-4
    """AdamW learning rate (constant)."""
    max_new_tokens: int = 64
    temperature: float = 1.0
    """Sampling temperature; log-probs are taken at the same temperature (on-policy)."""
    baseline_decay: float = 0.9
    """b <- decay * b + (1 - decay) * mean reward (the seed's moving-average baseline)."""
    repetition_penalty: float = 1.0
    """Sampling-time penalty on already-seen tokens (1.0: off). Makes the samples off-policy."""
    ngram_penalty: float = 0.0
    """Reward-side penalty: R = r - ngram_penalty * (share of repeated n-grams). 0: off."""
    ngram: int = 3
    k: int = 1
    """Samples per prompt: each step draws batch_size / k prompts and samples k completions of each
    (rloo and reinforce_pp_baseline need k >= 2)."""
    kl_coef: float = 0.0
    """beta of the KL penalty to the reference (SFT) policy: in the reward (reinforce, rloo,
    reinforce_pp) or as a loss (reinforce_pp_baseline). 0: off."""
    kl_estimator: str = "k1"
    """Per-token KL estimator in the reward: k1, k2 or k3 (reinforce_pp_baseline's loss always uses k2)."""
    clip: float = 0.2
    """PPO clip range epsilon of the REINFORCE++ ratio."""
    ppo_epochs: int = 1
    """Passes over each rollout batch (REINFORCE++)."""
    minibatches: int = 1
    """Optimizer steps per pass: the rollout batch is split into this many minibatches (REINFORCE++)."""
    lora_r: int = 0
    """LoRA rank: > 0 trains low-rank adapters on the attention and MLP projections instead of all
    weights (`peft`; for policies too big to fine-tune whole). 0: full fine-tuning."""
    lora_alpha: float = 16.0
    whiten: bool = True
    """REINFORCE++: normalise token advantages over the batch (False: raw returns, for ablations)."""
    track_kl: bool = True
    """Keep a frozen copy of the starting policy and log the KL to it every step, even when
    kl_coef is 0 (one extra forward pass without gradients)."""
    reward_clip: float = 20.0
    """Reward-model scores are clamped to [-reward_clip, reward_clip] before any shaping; the share
    clamped is logged as `reward/clipped_frac` (a guard against a reward model gone wild). 0: off."""
    readout: str = "expected"
    """Ordinal reward models: 'expected' class or 'p7' = P(class >= 7)."""
    max_grad_norm: float = 1.0
    eval_every: int = 25
    """Steps between held-out evaluations (0: only before and after training)."""
    eval_prompts: int | None = None
    """Held-out prompts per evaluation (None: all given to `train`)."""
    sample_every: int = 5
    """Steps between logged samples (the first `n_samples` of the batch)."""
    n_samples: int = 4
    checkpoint_every: int = 50
    """Steps between checkpoints (needs `out`; 0: none)."""
    keep_checkpoints: int = 2
    checkpoint_optimizer: bool = True
    """False: checkpoints hold the policy, the sampler's RNG and the history but not AdamW's
    moments, two thirds of a checkpoint on SmolLM2 (1.08 of 1.6 GB); resuming one restarts the
    moments from zero, said in one line (colab-smoke, whose CPU runs only show the code runs)."""
    seed: int = 0

    def validate(self) -> "RLConfig":
        positive = ["steps", "batch_size", "lr", "max_new_tokens", "temperature", "repetition_penalty", "ngram",
                    "max_grad_norm", "n_samples", "keep_checkpoints", "k", "clip", "ppo_epochs", "minibatches"]
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ConfigError(f"config: field '{name}': expected a positive number, got {v!r}")
        for name in ("eval_every", "sample_every", "checkpoint_every", "ngram_penalty", "kl_coef", "lora_r",
                     "reward_clip"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"config: field '{name}': expected a number >= 0, got {v!r}")
        if not 0 <= self.baseline_decay < 1:
            raise ConfigError(f"config: field 'baseline_decay': expected 0 <= decay < 1, got {self.baseline_decay!r}")
        if self.algo not in ALGOS:
            raise ConfigError(f"config: field 'algo': expected one of {', '.join(ALGOS)}, got {self.algo!r}")
        for name in ("k", "steps", "batch_size", "ngram", "ppo_epochs", "minibatches", "max_new_tokens", "lora_r"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"config: field '{name}': expected a whole number, got {getattr(self, name)!r}")
        if self.algo in ("rloo", "reinforce_pp_baseline") and self.k < 2:
            raise ConfigError(f"config: field 'k': {self.algo} needs k >= 2 samples per prompt, got {self.k}")
        if self.batch_size % self.k:
            raise ConfigError(f"config: field 'batch_size': {self.batch_size} rollouts do not split into groups of "
                              f"k={self.k} samples per prompt (expected a multiple of k)")
        if self.batch_size % self.minibatches:
            raise ConfigError(f"config: field 'minibatches': {self.batch_size} rollouts do not split into "
                              f"{self.minibatches} equal minibatches")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(f"config: field 'kl_estimator': expected one of {', '.join(KL_ESTIMATORS)}, "
                              f"got {self.kl_estimator!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"config: field 'readout': expected 'expected' or 'p7', got {self.readout!r}")
        return self


@dataclass
class History:
    """What a run logged: `steps` (one metrics dict per step), `evals` (held-out evaluations,
    step 0 = before training), `samples` (completions every `sample_every` steps)."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    def series(self, key: str, source: str = "steps") -> tuple[list[int], list[float]]:
        """(steps, values) of one metric, skipping steps where it was not logged."""
        rows = [r for r in getattr(self, source) if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{k: list(d.get(k, [])) for k in ("steps", "evals", "samples")})

    @property
    def peak_gold(self) -> dict | None:
        """The evaluation with the highest gold mean (tiny world)."""
        rows = [e for e in self.evals if "gold_mean" in e]
        return max(rows, key=lambda e: e["gold_mean"]) if rows else None


def _not_finite(name: str, step: int, ckpt: str, done: str = "the policy was not updated") -> TrainingError:
    """The one-line error for a NaN or inf in tensor `name` at `step`."""
    return TrainingError(f"step {step}: {name} is not finite (NaN or inf); training stopped, {done}; last good "
                         f"checkpoint: {ckpt}. Try a lower learning rate or check the reward model")


def _finite(name: str, x: torch.Tensor, step: int, ckpt: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise _not_finite(name, step, ckpt)


def _smaller_batch(batch_size: int, multiple: int = 1) -> int | None:
    """Half of `batch_size`, rounded down to a multiple of `multiple` (k, minibatches); None if
    that leaves nothing."""
    half = batch_size // 2 // multiple * multiple
    return half or None


def _oom_guard(fn, step: int, where: str, knob: str, size: int, smaller: int | None, ckpt: str):
    """`fn()`, with CUDA running out of memory turned into a one-line `TrainingError` naming the step,
    the batch size and a smaller one. It is raised outside the handler, so the traceback that holds
    the failed step's tensors is gone (and their memory freed) when the error reaches a notebook."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    fix = f"try {knob}={smaller}" if smaller else "try a smaller max_new_tokens"
    then = " and resume from it" if ckpt != "none" else ""
    raise TrainingError(f"step {step}: out of GPU memory in {where} with {knob} {size}; training stopped; last good "
                        f"checkpoint: {ckpt}; {fix}{then}")


# ----------------------------------------------------------------------------- checkpoints

def _checkpoints(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted(d.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if d.is_dir() else []


def _save_checkpoint(out: Path, step: int, policy, opt, gen: torch.Generator, baseline, history: History,
                     cfg: RLConfig) -> Path:
    """Write checkpoints/step-N atomically (a temporary directory, then a rename); keep the last few.
    Weights that are not finite are never checkpointed: the last good checkpoint stays the newest."""
    from safetensors.torch import save_model

    if not bool(torch.stack([torch.isfinite(p).all() for p in policy.parameters()]).all()):
        raise _not_finite("a policy weight", step, str(latest_checkpoint(out) or "none"), "no checkpoint written")
    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = out / "checkpoints" / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(policy, str(tmp / "policy.safetensors"))
    torch.save({"optimizer": opt.state_dict() if cfg.checkpoint_optimizer else None, "generator": gen.get_state(),
                "step": step, "baseline": baseline}, tmp / "trainer.pt")
    (tmp / "history.json").write_text(json.dumps(history.to_dict()))
    (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _checkpoints(out)[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(path: str | Path) -> Path | None:
    """The newest `step-N` checkpoint of a run directory (or `path` itself if it is one)."""
    path = Path(path)
    if (path / "trainer.pt").exists():
        return path
    found = _checkpoints(path)
    return found[-1] if found else None


def _load_checkpoint(ckpt: Path, policy, opt, gen: torch.Generator) -> tuple[int, object, History]:
    from safetensors.torch import load_model

    load_model(policy, str(ckpt / "policy.safetensors"), device=str(next(policy.parameters()).device))
    state = torch.load(ckpt / "trainer.pt", weights_only=True, map_location="cpu")
    if state["optimizer"] is not None:
        opt.load_state_dict(state["optimizer"])
    else:
        print(f"resume: {ckpt} holds no optimizer state (checkpoint_optimizer=False): AdamW's moments restart from zero")
    gen.set_state(state["generator"])
    return state["step"], state["baseline"], History.from_dict(json.loads((ckpt / "history.json").read_text()))


RUN_FILES = ("checkpoints", "metrics.jsonl", "evals.jsonl", "samples.jsonl")
REWARD_FILE = "reward_model.json"
"""A run directory's record of the reward model it trained against: `{"fingerprint": ...}`
(`b2b.models.fingerprint`); cached runs are reused only under the same reward model."""


def recorded_reward_fingerprint(run_dir: str | Path) -> str | None:
    """The fingerprint in a run directory's `REWARD_FILE` (None for a run that predates the record);
    an unreadable record is a one-line ConfigError naming the file and field."""
    record = Path(run_dir) / REWARD_FILE
    if not record.exists():
        return None
    try:
        return json.loads(record.read_text())["fingerprint"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"resume: {record}: field 'fingerprint': expected a JSON object "
                          '{"fingerprint": ...} as train writes it') from None


def _check_same_reward_model(run_dir: Path, now: str | None) -> None:
    """Refuse to resume a run under another reward model (fingerprint `now`) than the one it
    trained against (a run without the record predates it and is resumed as before): the rewards
    of its two halves would measure different things, silently."""
    was = recorded_reward_fingerprint(run_dir)
    if (run_dir / REWARD_FILE).exists() and was != now:
        raise ConfigError(f"resume: {run_dir} trained against another reward model (fingerprint {was}, this one "
                          f"{now}); resume with that reward model, or start over with overwrite=True (--overwrite)")


def run_files(out: str | Path) -> list[str]:
    """The files of an earlier run in `out` that `train(out=...)` would overwrite."""
    return [name for name in RUN_FILES if (Path(out) / name).exists()]


def check_prompts_fit(policy, tokenizer, reward_model, prompts: list, eval_prompts: list, max_new_tokens: int,
                      locate=None) -> None:
    """Every prompt, chat-formatted, plus `max_new_tokens` must fit the context of the policy (and of
    a reward model, which reads the same ids; either may be given as its config, or None): a
    one-line error naming the first one that does not, checked once before anything is sampled or
    written. `locate(prompt)` may name the file and line it came from."""
    from b2b.data import check_prompt_lengths
    from b2b.rollout import context_length

    ctx = min((n for n in (context_length(m) for m in (policy, reward_model) if m is not None) if n), default=None)
    check_prompt_lengths(tokenizer, prompts, max_new_tokens, ctx, "prompt", locate)
    check_prompt_lengths(tokenizer, eval_prompts, max_new_tokens, ctx, "held-out prompt", locate)


# ----------------------------------------------------------------------------- evaluation

def evaluate_step(policy, tokenizer, reward_model, prompts: list[str], cfg: RLConfig, world: bool, step: int,
                  batch_size: int = 128, ref=None) -> dict:
    """Held-out metrics of the current policy, sampled with the training sampler's settings and a
    fixed seed (every evaluation of a run sees the same prompts and random stream); with `ref`,
    also `kl_ref`, the mean sequence KL to the reference policy."""
    from b2b.evaluate import evaluate_policy

    res = evaluate_policy(policy, tokenizer, prompts, reward_model, world=world, batch_size=batch_size,
                          max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + 1,
                          readout=cfg.readout, repetition_penalty=cfg.repetition_penalty, ref_policy=ref)
    keep = ("proxy_mean", "gold_mean", "distinct_2", "mean_length", "eos_rate", "kl_ref")
    return {"step": step, **{k: res[k] for k in keep if k in res}, "samples": res["samples"][:8]}


# ----------------------------------------------------------------------------- the loop

def _sync(device) -> None:
    if device.type == "cuda":  # honest time splits on a GPU
        torch.cuda.synchronize(device)


def policy_rewards(reward_model, ro, prompts: list[str], texts: list[str], finished: torch.Tensor,
                   readout: str = "expected") -> torch.Tensor:
    """(B,) rewards of a rollout: a reward model read at each sequence's last real token, or any
    callable `reward_model(prompts, completions, finished) -> list or tensor of floats` (e.g. the
    gold judge, as an upper bound on what a perfect reward model would give)."""
    if isinstance(reward_model, torch.nn.Module):
        with torch.no_grad():
            return scalar_reward(rollout_reward_scores(reward_model, ro), readout)
    r = reward_model(prompts, texts, finished.tolist())
    return torch.as_tensor(r, dtype=torch.float32, device=ro.completion_ids.device)


def rl_step(policy, tokenizer, reward_model, prompts: list[str], opt, gen: torch.Generator, baseline,
            cfg: RLConfig, world: bool, step: int, ckpt: str = "none", ref=None) -> tuple[dict, list[str], object]:
    """One policy-gradient step on `prompts` (k consecutive copies of each prompt when cfg.k > 1);
    returns (metrics, completions, new baseline state). `ref` is the frozen reference policy (needed
    when cfg.kl_coef > 0)."""
    device = next(policy.parameters()).device
    t0 = time.perf_counter()
    policy.eval()
    try:
        ro = sample_completions(policy, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, gen,
                                cfg.repetition_penalty)
    except TrainingError:  # sampling found non-finite probabilities: name the step
        raise _not_finite("sampling distribution", step, ckpt) from None
    _sync(device)
    t1 = time.perf_counter()
    texts = decode_completions(tokenizer, ro)
    finished = ro.finished(tokenizer.eos_token_id)
    proxy = policy_rewards(reward_model, ro, prompts, texts, finished, cfg.readout)
    _finite("reward", proxy, step, ckpt)
    clipped = torch.zeros_like(proxy)
    if cfg.reward_clip:
        clipped = (proxy.abs() > cfg.reward_clip).float()
        proxy = proxy.clamp(-cfg.reward_clip, cfg.reward_clip)
    rewards, rep = shaped_reward(proxy, ro.completion_ids, ro.completion_mask, cfg.ngram_penalty, cfg.ngram)
    mask = ro.completion_mask
    m = {}
    if world:
        from b2b.gold import judge

        fin = finished.tolist()
        m["reward/gold_mean"] = statistics.fmean(judge(p, t, f).rating for p, t, f in zip(prompts, texts, fin))
    if cfg.kl_coef > 0 and ref is None:
        raise ConfigError("rl_step: kl_coef > 0 needs the reference policy (ref=)")
    ref_logp = None
    if ref is not None:
        with torch.no_grad():
            ref_logp = rollout_logprobs(ref, ro, cfg.temperature)
        _finite("reference log-probs", ref_logp, step, ckpt)
    _sync(device)
    t2 = time.perf_counter()
    if cfg.algo in ("reinforce_pp", "reinforce_pp_baseline"):
        upd = clipped_update(policy, opt, ro, rewards, ref_logp, cfg, step, ckpt)
    else:
        upd = reinforce_update(policy, opt, ro, rewards, ref_logp, baseline, cfg, step, ckpt)
        baseline = upd.baseline
    logp_now, entropy = upd.logprobs, upd.entropy
    adv, losses, norms, clip_fracs = upd.advantages, upd.losses, upd.grad_norms, upd.clip_fracs
    _sync(device)
    t3 = time.perf_counter()
    fmask = mask.float()
    n_tok = fmask.sum()
    m.update({
        "reward/proxy_mean": proxy.mean().item(), "reward/shaped_mean": rewards.mean().item(),
        "reward/rep_frac": rep.mean().item(), "reward/clipped_frac": clipped.mean().item(),
        "adv/mean": adv.mean().item(), "adv/std": adv.std().item() if adv.numel() > 1 else 0.0,
        "loss": statistics.fmean(losses), "grad_norm": statistics.fmean(norms),
        "policy/entropy": (entropy.sum() / n_tok).item(),
        "sampler/offpolicy_gap": ((ro.sampler_logprobs - logp_now).abs() * fmask).sum().item() / n_tok.item(),
        "completions/mean_length": ro.lengths.float().mean().item(),
        "completions/eos_rate": finished.float().mean().item(),
        "completions/distinct_2": distinct_n(texts),
        "time/generate_s": t1 - t0, "time/score_s": t2 - t1, "time/learn_s": t3 - t2, "time/step_s": t3 - t0,
    })
    if cfg.algo == "reinforce":
        m["reward/baseline"] = baseline
    if ref_logp is not None:
        m["kl/ref"] = ((logp_now - ref_logp) * fmask).sum(1).mean().item()
    if clip_fracs:
        m["ppo/clip_frac"] = statistics.fmean(clip_fracs)
    return m, texts, baseline


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(policy, cfg: RLConfig):
    """Wrap `policy` with LoRA adapters of rank cfg.lora_r (alpha cfg.lora_alpha, no dropout) on the
    attention and MLP projections; only the adapters are trainable. A policy that already has
    adapters is returned as it is."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(policy, PeftModel):
        return policy
    targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in policy.named_modules())]
    if not targets:
        raise ConfigError(f"config: field 'lora_r': the policy has none of the projections {', '.join(LORA_TARGETS)}")
    return get_peft_model(policy, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                             target_modules=targets, task_type="CAUSAL_LM"))


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
    logp, entropy = rollout_logprobs(policy, ro, cfg.temperature, with_entropy=True)
    _finite("log-probs", logp, step, ckpt)
    adv, baseline = reinforce_advantages(cfg, rewards, logp, ref_logp, ro.completion_mask, baseline)
    loss = reinforce_loss(adv, logp, ro.completion_mask)
    norm = _update(policy, opt, loss, cfg.max_grad_norm, step, ckpt)
    return Update(logp.detach(), entropy, adv, [loss.item()], [norm], baseline=baseline)


def clipped_loss(cfg: RLConfig, logp, old_logp, adv, ref_logp, mask):
    """(loss, clip fraction) of a REINFORCE++ minibatch: PPO's clipped surrogate (a mean over the
    batch's tokens), plus for reinforce_pp_baseline beta times the token-mean k2 KL to the reference."""
    loss, frac = clipped_pg_loss(logp, old_logp, adv, mask, cfg.clip)
    if cfg.algo == "reinforce_pp_baseline" and cfg.kl_coef > 0:
        loss = loss + cfg.kl_coef * masked_mean(kl_per_token(logp, ref_logp, mask, "k2"), mask)
    return loss, frac


def clipped_update(policy, opt, ro, rewards, ref_logp, cfg: RLConfig, step: int, ckpt: str) -> Update:
    """REINFORCE++: `ppo_epochs` passes of `minibatches` optimizer steps over the rollout batch.
    The ratio's denominator and the advantages come once, from the log-probs of the policy that
    sampled the batch (`old_logp`): a forward pass before any update, or, with a single update,
    that update's own first forward pass (the same policy, one pass fewer)."""
    mask = ro.completion_mask
    entropy = adv = old_logp = None
    if cfg.ppo_epochs * cfg.minibatches > 1:
        with torch.no_grad():
            policy.eval()
            old_logp, entropy = rollout_logprobs(policy, ro, cfg.temperature, with_entropy=True)
        adv = pp_advantages(cfg, rewards, old_logp, ref_logp, mask)
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
            _finite("log-probs", logp, step, ckpt)
            loss, frac = clipped_loss(cfg, logp, old_logp[idx], adv[idx],
                                      None if ref_logp is None else ref_logp[idx], sub.completion_mask)
            norms.append(_update(policy, opt, loss, cfg.max_grad_norm, step, ckpt))
            losses.append(loss.item())
            fracs.append(frac.item())
    return Update(old_logp, entropy, adv[mask.bool()], losses, norms, fracs)


def _update(policy, opt, loss, max_grad_norm: float, step: int, ckpt: str) -> float:
    """One optimizer step on `loss` (checked finite), gradients clipped; returns the norm before clipping."""
    _finite("loss", loss, step, ckpt)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    _finite("gradient norm", grad_norm, step, ckpt)
    opt.step()
    return grad_norm.item()


def pp_advantages(cfg: RLConfig, rewards, old_logp, ref_logp, mask):
    """(B, C) REINFORCE++ advantages: token rewards (k1 KL at every token, the reward at the last;
    reinforce_pp_baseline: group-centred reward, no KL), returns to go, global whitening."""
    if cfg.algo == "reinforce_pp_baseline":
        kl, beta, r = torch.zeros_like(old_logp), 0.0, group_mean_baseline(rewards, cfg.k)
    else:
        kl = kl_per_token(old_logp, ref_logp, mask, cfg.kl_estimator) if cfg.kl_coef > 0 else torch.zeros_like(old_logp)
        beta, r = cfg.kl_coef, rewards
    returns = returns_to_go(token_level_rewards(r, kl, mask, beta), mask)
    return masked_whiten(returns, mask) if cfg.whiten else returns


def train(policy, tokenizer, reward_model, prompts: list[str], cfg: RLConfig | None = None, *,
          eval_prompts: list[str] | None = None, world: bool = True, out: str | Path | None = None,
          resume: str | Path | None = None, overwrite: bool = False, progress: bool = True,
          eval_batch_size: int = 128) -> History:
    """Train `policy` in place with policy gradients; returns the run's `History`.

    prompts: training prompts (user messages), drawn uniformly with replacement each step.
    eval_prompts: held-out prompts evaluated before training, every `cfg.eval_every` steps and
        after the last step (the first `cfg.eval_prompts` of them).
    world: the prompts are tiny-world prompts, so the gold judge rates every completion.
    out: run directory for `metrics.jsonl`, `samples.jsonl` and `checkpoints/`.
    resume: a run directory (or checkpoint) to continue from; the policy passed in is overwritten
        with the checkpoint's weights and training continues at the next step.
    """
    steps = train_steps(policy, tokenizer, reward_model, prompts, cfg, eval_prompts=eval_prompts, world=world,
                        out=out, resume=resume, overwrite=overwrite, progress=progress,
                        eval_batch_size=eval_batch_size)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def train_steps(policy, tokenizer, reward_model, prompts: list[str], cfg: RLConfig | None = None, *,
                eval_prompts: list[str] | None = None, world: bool = True, out: str | Path | None = None,
                resume: str | Path | None = None, overwrite: bool = False, progress: bool = True,
                eval_batch_size: int = 128):
    """`train` one step at a time: a generator that yields each step's metrics row once the step
    (and its logging, evaluation and checkpoint) is done, and returns the run's `History`. The
    arguments are `train`'s. (`b2b bench` interleaves b2b's steps with TRL's trainer this way.)"""
    from tqdm.auto import tqdm

    cfg = (cfg or RLConfig()).validate()
    if not prompts:
        raise ConfigError("train: expected at least one training prompt")
    eval_prompts = (eval_prompts or [])[: cfg.eval_prompts or None]
    check_prompts_fit(policy, tokenizer, reward_model, prompts, eval_prompts, cfg.max_new_tokens)
    out = Path(out) if out is not None else None
    ckpt = None
    reward_id = fingerprint(reward_model) if out is not None or resume is not None else None
    if resume is not None:
        ckpt = latest_checkpoint(resume)
        if ckpt is None:
            raise ConfigError(f"resume: {resume}: no checkpoint found (expected checkpoints/step-N inside a run directory)")
        _check_same_reward_model(ckpt.parent.parent, reward_id)
    elif out is not None and run_files(out) and not overwrite:
        raise ConfigError(f"out: {out} already holds a run ({', '.join(run_files(out))}); pass resume={str(out)!r} "
                          "to continue it or overwrite=True to start over")
    device = next(policy.parameters()).device
    if isinstance(reward_model, torch.nn.Module):
        reward_model.eval()
    gen = torch.Generator(device).manual_seed(cfg.seed)
    ref = None
    if cfg.kl_coef > 0 or cfg.track_kl:  # the starting policy, frozen (taken before any resume)
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    if cfg.lora_r:
        policy = add_lora(policy, cfg)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    history, baseline, start = History(), None, 0
    if ckpt is not None:
        start, baseline, history = _load_checkpoint(ckpt, policy, opt, gen)
        out = out or ckpt.parent.parent
    elif out is not None and (out / "checkpoints").exists():  # overwrite=True: start over
        shutil.rmtree(out / "checkpoints")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        (out / REWARD_FILE).write_text(json.dumps({"fingerprint": reward_id}) + "\n")
        _rewrite_logs(out, history)

    def log_eval(step):
        if not eval_prompts:
            return
        policy.eval()

        def evaluate():
            try:
                return evaluate_step(policy, tokenizer, reward_model, eval_prompts, cfg, world, step,
                                     eval_batch_size, ref)
            except TrainingError:  # non-finite sampling probabilities: name the step
                raise _not_finite("sampling distribution (held-out evaluation)", step, ckpt_path,
                                  "the policy broke in this step's update" if step else "before any update") from None
        e = _oom_guard(evaluate, step, "the held-out evaluation", "eval_batch_size", eval_batch_size,
                       _smaller_batch(min(eval_batch_size, len(eval_prompts))), ckpt_path)
        history.evals.append(e)
        _append(out, "evals.jsonl", e)

    ckpt_path = str(latest_checkpoint(out)) if out is not None and _checkpoints(out) else "none"
    if start == 0:
        log_eval(0)
    bar = tqdm(range(start + 1, cfg.steps + 1), desc=f"{cfg.algo}", initial=start, total=cfg.steps,
               disable=not progress)
    smaller = _smaller_batch(cfg.batch_size, math.lcm(cfg.k, cfg.minibatches))
    for step in bar:
        idx = torch.randint(len(prompts), (cfg.batch_size // cfg.k,), generator=gen, device=device).tolist()
        batch = [prompts[i] for i in idx for _ in range(cfg.k)]  # groups of k samples of one prompt
        m, texts, baseline = _oom_guard(
            lambda: rl_step(policy, tokenizer, reward_model, batch, opt, gen, baseline, cfg, world, step, ckpt_path,
                            ref),
            step, "the RL step", "batch_size", cfg.batch_size, smaller, ckpt_path)
        row = {"step": step, **m}
        history.steps.append(row)
        _append(out, "metrics.jsonl", row)
        if cfg.sample_every and step % cfg.sample_every == 0:
            for s in _samples(batch, texts, step, cfg.n_samples, world):
                history.samples.append(s)
                _append(out, "samples.jsonl", s)
        if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0):
            log_eval(step)
        if out is not None and cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            ckpt_path = str(_save_checkpoint(out, step, policy, opt, gen, baseline, history, cfg))
        post = {"proxy": f"{m['reward/proxy_mean']:.2f}"}
        if "reward/gold_mean" in m:
            post["gold"] = f"{m['reward/gold_mean']:.2f}"
        bar.set_postfix(post)
        yield row
    policy.eval()
    return history


def _samples(prompts: list[str], texts: list[str], step: int, n: int, world: bool) -> list[dict]:
    rows = [{"step": step, "prompt": p, "response": t} for p, t in zip(prompts[:n], texts[:n])]
    if world:
        from b2b.gold import judge

        for r in rows:
            r["gold"] = judge(r["prompt"], r["response"]).rating
    return rows


def _append(out: Path | None, name: str, row: dict) -> None:
    if out is not None:
        with open(out / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _rewrite_logs(out: Path, history: History) -> None:
    """The JSONL logs hold exactly the history (after a resume: up to the checkpoint's step)."""
    for name, rows in (("metrics.jsonl", history.steps), ("evals.jsonl", history.evals),
                       ("samples.jsonl", history.samples)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def summary(history: History, seconds: float | None = None) -> dict:
    """The `b2b run --json` fields of a run: `sft` (evaluation before training), `final` (after),
    `peak_gold_mean` (None outside the tiny world), `steps`, `seconds` (given, else the sum of
    the step times), `median_step_s`."""
    keep = ("proxy_mean", "gold_mean", "distinct_2", "mean_length", "eos_rate", "kl_ref")
    first, last = (history.evals[0], history.evals[-1]) if history.evals else ({}, {})
    peak = history.peak_gold
    return {"sft": {k: first[k] for k in keep if k in first}, "final": {k: last[k] for k in keep if k in last},
            "peak_gold_mean": peak["gold_mean"] if peak else None, "peak_step": peak["step"] if peak else None,
            "steps": history.steps[-1]["step"] if history.steps else 0,
            "seconds": round(seconds if seconds is not None else sum(r["time/step_s"] for r in history.steps), 2),
            "median_step_s": statistics.median(r["time/step_s"] for r in history.steps) if history.steps else None}


def comparison_table(sft: dict, final: dict, name: str = "REINFORCE") -> str:
    """The seed's table as Markdown: Model | Eval Reward | Improvement, plus gold in the tiny world."""
    gold = "gold_mean" in sft and "gold_mean" in final

    def cell(d, key, fmt):
        return format(d[key], fmt) if key in d else "n/a"

    def diff(key, fmt):
        return format(final[key] - sft[key], "+" + fmt) if key in final and key in sft else "n/a"
    head = "| Model | Eval Reward | Improvement |" + (" Gold | Gold improvement |" if gold else "")
    rows = [head, "|" + "---|" * (head.count("|") - 1),
            f"| SFT | {cell(sft, 'proxy_mean', '.4f')} | - |" + (f" {sft['gold_mean']:.3f} | - |" if gold else ""),
            f"| {name} | {cell(final, 'proxy_mean', '.4f')} | {diff('proxy_mean', '.4f')} |"
            + (f" {final['gold_mean']:.3f} | {diff('gold_mean', '.3f')} |" if gold else "")]
    return "\n".join(rows)
