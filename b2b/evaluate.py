"""Evaluate a policy on held-out prompts: gold mean (tiny world), proxy reward (with a reward
model), end-of-turn rate, distinct-2, mean length, and a few samples.

    result = evaluate_policy(policy, tokenizer, prompts, reward_model=rm)
    result["gold_mean"], result["samples"][:3]
"""
from __future__ import annotations

import statistics

import torch
from torch import Tensor

from b2b.build_data import reference_responses
from b2b.data import check_prompt_lengths
from b2b.gold import judge
from b2b.metrics import distinct_n
from b2b.reward import scalar_reward
from b2b.rollout import (Rollout, context_length, decode_completions, rollout_logprobs, rollout_reward_scores,
                         sample_completions)


@torch.no_grad()
def proxy_rewards(reward_model, rollout: Rollout, readout: str = "expected") -> Tensor:
    """(B,) reward-model rewards of a rollout, read at each sequence's last real token."""
    return scalar_reward(rollout_reward_scores(reward_model, rollout), readout)


@torch.no_grad()
def sample_many(policy, tokenizer, prompts: list, batch_size: int = 128, max_new_tokens: int = 64,
                temperature: float = 1.0, seed: int = 0, reward_model=None, readout: str = "expected",
                repetition_penalty: float = 1.0, ref_policy=None) -> dict:
    """One completion per prompt, sampled in batches: texts, finished flags, token lengths and,
    with a reward model, its raw outputs (`scores`, (N, K)) and rewards (`proxy`). A callable
    `reward_model(prompts, completions, finished)` gives `proxy` only. With `ref_policy`, also
    `kl`: each sample's sum_t log pi(y_t) - log pi_ref(y_t), whose mean estimates KL(pi || pi_ref)
    (exactly so when the samples are on-policy: no repetition penalty)."""
    device = next(policy.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    out = {"texts": [], "finished": [], "lengths": [], "scores": [], "proxy": [], "kl": []}
    for i in range(0, len(prompts), batch_size):
        ro = sample_completions(policy, tokenizer, prompts[i:i + batch_size], max_new_tokens, temperature, gen,
                                repetition_penalty)
        texts, finished = decode_completions(tokenizer, ro), ro.finished(tokenizer.eos_token_id).tolist()
        out["texts"] += texts
        out["finished"] += finished
        out["lengths"] += ro.lengths.tolist()
        if ref_policy is not None:
            lp, lp_ref = rollout_logprobs(policy, ro, temperature), rollout_logprobs(ref_policy, ro, temperature)
            out["kl"] += (lp - lp_ref).sum(1).tolist()
        if reward_model is not None and not isinstance(reward_model, torch.nn.Module):  # a reward function
            out["proxy"] += [float(x) for x in reward_model(prompts[i:i + batch_size], texts, finished)]
        elif reward_model is not None:
            scores = rollout_reward_scores(reward_model, ro)
            out["scores"].append(scores.cpu())
            out["proxy"] += scalar_reward(scores, readout).tolist()
    out["scores"] = torch.cat(out["scores"]) if out["scores"] else None
    return out


def evaluate_policy(policy, tokenizer, prompts: list[str], reward_model=None, world: bool = True,
                    batch_size: int = 128, max_new_tokens: int = 64, temperature: float = 1.0,
                    seed: int = 0, readout: str = "expected", repetition_penalty: float = 1.0,
                    ref_policy=None) -> dict:
    """Sample one completion per prompt and summarise (keys as in `b2b evaluate --json`; with
    `ref_policy` also `kl_ref`, the mean sequence KL to it, see `sample_many`). A prompt that does not
    fit the policy's context with `max_new_tokens` after it is a one-line error before any sampling."""
    check_prompt_lengths(tokenizer, prompts, max_new_tokens, context_length(policy))
    s = sample_many(policy, tokenizer, prompts, batch_size, max_new_tokens, temperature, seed, reward_model, readout,
                    repetition_penalty, ref_policy)
    texts, finished = s["texts"], s["finished"]
    out = {"n": len(prompts), "eos_rate": sum(finished) / len(prompts),
           "distinct_2": distinct_n(texts), "mean_length": statistics.fmean(s["lengths"])}
    if s["kl"]:
        out["kl_ref"] = statistics.fmean(s["kl"])
    samples = [{"prompt": p, "response": t, "finished": f} for p, t, f in zip(prompts, texts, finished)]
    if world:
        gold = [judge(p, t, f).rating for p, t, f in zip(prompts, texts, finished)]
        out["gold_mean"] = statistics.fmean(gold)
        out["reference_distinct_2"] = distinct_n(reference_responses(prompts, seed))
        for row, g in zip(samples, gold):
            row["gold"] = g
    if reward_model is not None:
        out["proxy_mean"] = statistics.fmean(s["proxy"])
        for row, r in zip(samples, s["proxy"]):
            row["proxy"] = r
    out["samples"] = samples
    return out
