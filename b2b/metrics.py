"""Completion metrics, and the namespaced metrics row of a training step (docs/glossary.md)."""
from __future__ import annotations

import statistics

from b2b.tinyworld.gold import words


def ngrams(ws: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(ws[i:] for i in range(n))))


def distinct_n(texts: list[str], n: int = 2) -> float:
    """`completions/distinct_2` for n = 2: unique word n-grams / all word n-grams, pooled over
    `texts` (1.0: no n-gram ever repeats; near 0: every sample says the same thing)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _ranks(x: list[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation (0.0 when either side is constant)."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else 0.0


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    return pearson(_ranks(x), _ranks(y))


def calibration(probs: list[float], outcomes: list[bool], n_bins: int = 10) -> tuple[list[dict], float]:
    """Reliability of predicted probabilities: per equal-width bin the mean prediction, the observed
    frequency and the count; and the expected calibration error
    ECE = sum_bins (n_bin / N) * |mean prediction - observed frequency|."""
    bins = [[] for _ in range(n_bins)]
    for p, o in zip(probs, outcomes):
        bins[min(int(p * n_bins), n_bins - 1)].append((p, float(o)))
    rows = [{"predicted": sum(p for p, _ in b) / len(b), "observed": sum(o for _, o in b) / len(b), "n": len(b)}
            for b in bins if b]
    ece = sum(r["n"] * abs(r["predicted"] - r["observed"]) for r in rows) / max(1, len(probs))
    return rows, ece


def step_metrics(cfg, ro, texts, finished, proxy, rewards, rep, clipped, ref_logp, upd, clock) -> dict:
    """The metrics row of one `b2b.train` step (the names: docs/glossary.md): rewards before and
    after shaping, advantages, loss, the gradient norm before clipping (mean over the step's
    updates) and the share of them that were clipped, entropy, the sampler's off-policy gap, completion statistics,
    the KL to the reference (when tracked) and the time of each phase (`clock`: four timestamps)."""
    fmask = ro.completion_mask.float()
    n_tok = fmask.sum()
    adv = upd.advantages
    m = {"reward/proxy_mean": proxy.mean().item(), "reward/shaped_mean": rewards.mean().item(),
         "reward/rep_frac": rep.mean().item(), "reward/clipped_frac": clipped.mean().item(),
         "adv/mean": adv.mean().item(), "adv/std": adv.std().item() if adv.numel() > 1 else 0.0,
         "loss": statistics.fmean(upd.losses),
         "grad_norm": statistics.fmean(upd.grad_norms) if upd.grad_norms else float("nan"),
         # share of this step's optimizer updates whose gradient norm was above max_grad_norm, so clipped
         "grad/clipped_frac": statistics.fmean(float(g > cfg.max_grad_norm) for g in upd.grad_norms)
         if upd.grad_norms else 0.0,
         "policy/entropy": (upd.entropy.sum() / n_tok).item(),
         "sampler/offpolicy_gap": ((ro.sampler_logprobs - upd.logprobs).abs() * fmask).sum().item() / n_tok.item(),
         "completions/mean_length": ro.lengths.float().mean().item(),
         "completions/eos_rate": finished.float().mean().item(), "completions/distinct_2": distinct_n(texts),
         "time/generate_s": clock[1] - clock[0], "time/score_s": clock[2] - clock[1],
         "time/learn_s": clock[3] - clock[2], "time/step_s": clock[3] - clock[0]}
    if ref_logp is not None:
        m["kl/ref"] = ((upd.logprobs - ref_logp) * fmask).sum(1).mean().item()
    if upd.clip_fracs:
        m["ppo/clip_frac"] = statistics.fmean(upd.clip_fracs)
    if upd.skipped:  # fp16: updates the gradient scaler skipped (b2b.precision)
        m["grad/skipped"] = upd.skipped
    return m


def sync_time(policy) -> float:
    """The time now, after a GPU has finished its queued work (honest time splits)."""
    import time

    import torch

    device = next(policy.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
