"""Advantage estimators and reward shaping: small pure tensor functions, one equation each.

Vanilla REINFORCE (notebook 03) treats the whole completion as one action:

    grad J = E[ (R - b) * grad log pi(y | x) ],   log pi(y | x) = sum_t log pi(y_t | x, y_<t)

Any baseline b that does not depend on the sample y leaves the gradient unbiased and, when it
tracks E[R], shrinks its variance.
"""
from __future__ import annotations

import torch
from torch import Tensor


def moving_average_baseline(rewards: Tensor, baseline: float | None, decay: float = 0.9) -> tuple[Tensor, float]:
    """Advantages against an exponential moving average of past batch-mean rewards.

        A_i = R_i - b_{s-1},        b_s = decay * b_{s-1} + (1 - decay) * mean_i R_i

    b_{s-1} is computed from earlier batches only, so A_i is an unbiased advantage. On the first
    step (`baseline` None) b_0 = mean_i R_i of that batch. Returns (advantages (B,), b_s).
    """
    mean = rewards.mean().item()
    b = mean if baseline is None else float(baseline)
    return rewards - b, decay * b + (1 - decay) * mean


def reinforce_loss(advantages: Tensor, logprobs: Tensor, mask: Tensor) -> Tensor:
    """The REINFORCE surrogate whose gradient is the estimator above, averaged over the batch:

        L = -(1/B) sum_i A_i * sum_t m_it * log pi(y_it | x_i, y_i<t)

    `advantages` (B,) are constants (no gradient flows through them); `logprobs`, `mask` (B, C).
    """
    return -(advantages.detach() * (logprobs * mask).sum(1)).mean()


def repeated_ngram_fraction(token_ids: Tensor, mask: Tensor, n: int = 3) -> Tensor:
    """(B,) share of each completion's token n-grams that repeat an n-gram seen earlier in it.

        rep_i = (#n-grams of y_i - #distinct n-grams of y_i) / #n-grams of y_i   (0 if none)

    Only n-grams lying wholly inside the mask count. Vectorised: each n-gram is hashed to one
    int64 (base-V digits), each row sorted, and equal neighbours counted.
    """
    B, C = token_ids.shape
    if C < n:
        return torch.zeros(B, device=token_ids.device)
    V = int(token_ids.max().item()) + 1
    if V ** n >= 2 ** 63:
        raise ValueError(f"repeated_ngram_fraction: n={n} is too large for a vocabulary of {V} tokens")
    h = torch.zeros(B, C - n + 1, dtype=torch.long, device=token_ids.device)
    valid = torch.ones_like(h, dtype=torch.bool)
    for j in range(n):  # n is small (2-4): a loop over positions in the n-gram, not over samples
        h = h * V + token_ids[:, j:C - n + 1 + j].long()
        valid &= mask[:, j:C - n + 1 + j].bool()
    h = torch.where(valid, h, torch.full_like(h, -1))               # invalid n-grams sort first
    s, _ = h.sort(dim=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    total = valid.sum(1)
    return torch.where(total > 0, dup.sum(1) / total.clamp(min=1), torch.zeros_like(total, dtype=torch.float))


def shaped_reward(reward: Tensor, token_ids: Tensor, mask: Tensor, coef: float = 0.0, n: int = 3) -> tuple[Tensor, Tensor]:
    """Reward-side repetition penalty: R = r - coef * rep_n(y). Returns (R, rep_n)."""
    rep = repeated_ngram_fraction(token_ids, mask, n)
    return reward - coef * rep.to(reward.dtype), rep
