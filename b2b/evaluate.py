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
from b2b.gold import judge
from b2b.metrics import distinct_n
from b2b.rollout import Rollout, decode_completions, reward_scores, sample_completions


def scalar_reward(scores: Tensor) -> Tensor:
    """(B,) reward from a reward model's (B, K) output: the score itself when K == 1, else the
    expected class sum_k k * softmax(scores)_k with classes numbered 1..K."""
    if scores.shape[-1] == 1:
        return scores.squeeze(-1)
    classes = torch.arange(1, scores.shape[-1] + 1, dtype=scores.dtype, device=scores.device)
    return (scores.softmax(-1) * classes).sum(-1)


@torch.no_grad()
def proxy_rewards(reward_model, rollout: Rollout) -> Tensor:
    """(B,) reward-model rewards of a rollout, read at each sequence's last real token."""
    return scalar_reward(reward_scores(reward_model, rollout.input_ids, rollout.attention_mask))


def evaluate_policy(policy, tokenizer, prompts: list[str], reward_model=None, world: bool = True,
                    batch_size: int = 128, max_new_tokens: int = 64, temperature: float = 1.0,
                    seed: int = 0) -> dict:
    """Sample one completion per prompt and summarise (keys as in `b2b evaluate --json`)."""
    device = next(policy.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    texts, finished, lengths, proxy = [], [], [], []
    for i in range(0, len(prompts), batch_size):
        ro = sample_completions(policy, tokenizer, prompts[i:i + batch_size], max_new_tokens, temperature, gen)
        texts += decode_completions(tokenizer, ro)
        finished += ro.finished(tokenizer.eos_token_id).tolist()
        lengths += ro.lengths.tolist()
        if reward_model is not None:
            proxy += proxy_rewards(reward_model, ro).tolist()
    out = {"n": len(prompts), "eos_rate": sum(finished) / len(prompts),
           "distinct_2": distinct_n(texts), "mean_length": statistics.fmean(lengths)}
    samples = [{"prompt": p, "response": t, "finished": f} for p, t, f in zip(prompts, texts, finished)]
    if world:
        gold = [judge(p, t, f).rating for p, t, f in zip(prompts, texts, finished)]
        out["gold_mean"] = statistics.fmean(gold)
        out["reference_distinct_2"] = distinct_n(reference_responses(prompts, seed))
        for s, g in zip(samples, gold):
            s["gold"] = g
    if reward_model is not None:
        out["proxy_mean"] = statistics.fmean(proxy)
        for s, r in zip(samples, proxy):
            s["proxy"] = r
    out["samples"] = samples
    return out
