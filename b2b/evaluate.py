"""Evaluate a policy on held-out prompts: gold mean (tiny world), proxy reward (with a reward
model), end-of-turn rate, distinct-2, mean length, and a few samples.

    result = evaluate_policy(policy, tokenizer, prompts, reward_model=rm)
    result["gold_mean"], result["samples"][:3]

`evaluate_step` is the held-out evaluation `b2b.train` runs every `eval_every` steps; `summary`
and `comparison_table` report a finished run (`b2b run --json`, the seed's results table).
"""
from __future__ import annotations

import statistics

import torch
from torch import Tensor

from b2b.data import check_prompt_lengths
from b2b.errors import TrainingError
from b2b.guards import not_finite, oom_guard, smaller_batch
from b2b.metrics import distinct_n
from b2b.reward import rollout_reward_scores, scalar_reward
from b2b.rollout import Rollout, context_length, decode_completions, rollout_logprobs, sample_completions
from b2b.tinyworld.gold import judge
from b2b.tinyworld.world import reference_responses


@torch.no_grad()
def proxy_rewards(reward_model, rollout: Rollout, readout: str = "expected", prompts: list | None = None) -> Tensor:
    """(B,) reward-model rewards of a rollout, read at each sequence's last real token (a
    `Retokenized` reward model also needs the rollout's `prompts`)."""
    return scalar_reward(rollout_reward_scores(reward_model, rollout, prompts=prompts), readout)


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
            scores = rollout_reward_scores(reward_model, ro, prompts=prompts[i:i + batch_size])
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


# ----------------------------------------------------------------------------- inside and after a training run

def evaluate_step(policy, tokenizer, reward_model, prompts: list[str], cfg, world: bool, step: int,
                  batch_size: int = 128, ref=None) -> dict:
    """Held-out metrics of the current policy, sampled with the training sampler's settings and a
    fixed seed (every evaluation of a run sees the same prompts and random stream); with `ref`,
    also `kl_ref`, the mean sequence KL to the reference policy."""
    res = evaluate_policy(policy, tokenizer, prompts, reward_model, world=world, batch_size=batch_size,
                          max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + 1,
                          readout=cfg.readout, repetition_penalty=cfg.repetition_penalty, ref_policy=ref)
    keep = ("proxy_mean", "gold_mean", "distinct_2", "mean_length", "eos_rate", "kl_ref")
    return {"step": step, **{k: res[k] for k in keep if k in res}, "samples": res["samples"][:8]}


def summary(history, seconds: float | None = None) -> dict:
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


def evaluator(policy, tokenizer, reward_model, prompts, cfg, world, batch_size, ref):
    """evaluate(step, last_good) -> the held-out evaluation row of `step`, its failures one line."""
    def evaluate(step: int, last_good: str) -> dict:
        def run():
            policy.eval()
            try:
                return evaluate_step(policy, tokenizer, reward_model, prompts, cfg, world, step, batch_size, ref)
            except TrainingError:  # non-finite sampling probabilities: name the step
                raise not_finite("sampling distribution (held-out evaluation)", step, last_good,
                                 "the policy broke in this step's update" if step else "before any update") from None
        return oom_guard(run, step, "the held-out evaluation", "eval_batch_size", batch_size,
                         smaller_batch(min(batch_size, len(prompts))), last_good)
    return evaluate


def logged_samples(prompts: list[str], texts: list[str], step: int, n: int, world: bool) -> list[dict]:
    """The first `n` completions of a step as `History.samples` rows (with gold in the tiny world)."""
    rows = [{"step": step, "prompt": p, "response": t} for p, t in zip(prompts[:n], texts[:n])]
    if world:
        for r in rows:
            r["gold"] = judge(r["prompt"], r["response"]).rating
    return rows


def collapse_flags(proxy: Tensor, distinct_2: Tensor, keep: float = 0.5) -> Tensor:
    """(T,) bool: which of a run's held-out evaluations (index 0: the SFT policy, before training)
    look like reward hacking to a detector that needs no gold judge. The proxy reward is above the
    SFT policy's while the answers' diversity has fallen below `keep` of the SFT policy's:

        flag_t = (proxy_t > proxy_0) and (distinct2_t < keep * distinct2_0)

    Both conditions are needed: diversity alone also falls when a policy learns one good answer
    per prompt, and a rising proxy alone is what training is for. Notebook 04 compares the first
    flag with the step where gold peaked."""
    proxy, distinct_2 = torch.as_tensor(proxy, dtype=torch.float64), torch.as_tensor(distinct_2, dtype=torch.float64)
    return (proxy > proxy[0]) & (distinct_2 < keep * distinct_2[0])

