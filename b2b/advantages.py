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

    From the second step on, b_{s-1} comes from earlier batches only, so A_i is an unbiased
    advantage. On the first step (`baseline` None) there is no past: b_0 = mean_j R_j of that very
    batch, which holds R_i with weight 1/B. Then A_i = (1 - 1/B) R_i - (1/B) sum_{j != i} R_j, and
    in expectation the step is the true gradient scaled by (1 - 1/B) (1.6% short at B = 64, on
    one step): a smaller step, not a turn in another direction. Returns (advantages (B,), b_s).
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
    if V ** n > 2 ** 63:  # hashes run up to V^n - 1, which must fit an int64
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
    return dup.sum(1) / total.clamp(min=1)                          # 0 for a row with no n-gram


def shaped_reward(reward: Tensor, token_ids: Tensor, mask: Tensor, coef: float = 0.0, n: int = 3) -> tuple[Tensor, Tensor]:
    """Reward-side repetition penalty: R = r - coef * rep_n(y). Returns (R, rep_n)."""
    rep = repeated_ngram_fraction(token_ids, mask, n)
    return reward - coef * rep.to(reward.dtype), rep


# ----------------------------------------------------------------------------- KL to the reference policy
#
# With y_t sampled from pi and the log-ratio  l_t = log pi(y_t | .) - log pi_ref(y_t | .),  three
# per-token estimators of KL(pi || pi_ref) (Schulman, "Approximating KL divergence", 2020):
#   k1 = l_t                      unbiased for the KL's value, can be negative
#   k2 = l_t^2 / 2                biased for the value, low variance near pi_ref
#   k3 = exp(-l_t) - 1 + l_t      unbiased for the value, always >= 0, low variance near pi_ref only: far
#                                 from it, exp(-l_t) = pi_ref / pi is large on the tokens pi has made
#                                 rare, and its variance can be many times k1's (notebook 06's check)
#
# Their *gradients* are another matter, and depend on where the estimate goes (each claim below is
# measured on an exact two-token model in tests/test_kl_gradients.py):
#   - in the reward (detached, weighted by grad log pi(y), as kl_shaped_reward and REINFORCE++ do):
#     k1 gives the gradient of the sequence KL without bias; k2 and k3 estimate the KL's value but
#     their score-function gradient is not the KL's gradient.
#   - as a loss differentiated through log pi at fixed samples (REINFORCE++-baseline's k2 loss):
#     k2's expected gradient is the KL's gradient for one token's distribution, but summed over the
#     tokens of a sampled sequence it misses how early tokens change the later ones' contexts, so
#     it is not the sequence KL's gradient; k3 as a loss gives the gradient of the *reverse*
#     KL(pi_ref || pi) per token; k1 as a loss has zero expected gradient.

KL_ESTIMATORS = ("k1", "k2", "k3")
LOG_RATIO_CLAMP = 10.0
"""|l_t| beyond this many nats is clamped before any estimator is taken (OpenRLHF clamps its
estimates to the same range): k3's exp(-l) would overflow to inf below l of about -88 in fp32,
and a token 10 nats from the reference is already a broken policy, not a measurement."""


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, estimator: str = "k1") -> Tensor:
    """(B, C) per-token estimate of KL(pi || pi_ref) at the sampled tokens, zero outside `mask`:

        k1 = l,   k2 = l^2 / 2,   k3 = exp(-l) - 1 + l,     l = clamp(log pi(y_t) - log pi_ref(y_t), -10, 10)

    The clamp keeps every estimate finite (k3 <= e^10 - 11) and passes no gradient beyond it.
    """
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio ** 2
    elif estimator == "k3":
        kl = torch.expm1(-log_ratio) + log_ratio
    else:
        raise ValueError(f"kl estimator: expected one of {', '.join(KL_ESTIMATORS)}, got {estimator!r}")
    return kl * mask


def kl_shaped_reward(reward: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, beta: float,
                     estimator: str = "k1") -> tuple[Tensor, Tensor]:
    """Sequence-level KL folded into the reward (Back to Basics, Ahmadian et al. 2024, eq. 1):

        R_i = r_i - beta * sum_t m_it * kl_t,     kl_t = log pi(y_it) - log pi_ref(y_it)  (k1)

    Log-probs are detached: the KL enters as a reward, not as a differentiated loss. With k1 the
    REINFORCE gradient of R is then an unbiased estimate of grad (E[r] - beta * KL(pi || pi_ref))
    for whole sequences; k2 and k3 estimate the KL's value, not that gradient (see above). Returns
    (R (B,), sequence KL (B,))."""
    kl = kl_per_token(logprobs.detach(), ref_logprobs.detach(), mask, estimator).sum(1)
    return reward - beta * kl.to(reward.dtype), kl


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """Leave-one-out advantages for `rewards` laid out as groups of k consecutive samples of one prompt:

        A_i = R_i - 1/(k-1) * sum_{j != i, same prompt} R_j  =  k/(k-1) * (R_i - mean_group R)

    The baseline of each sample uses only the other k-1 samples, so it is independent of y_i and the
    estimator stays unbiased (Kool et al. 2019; Ahmadian et al. 2024)."""
    if k < 2:
        raise ValueError(f"rloo: k (samples per prompt) must be >= 2 for a leave-one-out baseline, got {k}")
    if rewards.numel() % k:
        raise ValueError(f"rloo: {rewards.numel()} rewards do not split into groups of k={k}")
    g = rewards.view(-1, k)
    return (g - (g.sum(1, keepdim=True) - g) / (k - 1)).view(-1)


def group_mean_baseline(rewards: Tensor, k: int) -> Tensor:
    """R_i - mean of its prompt's group of k (REINFORCE++-baseline's first step)."""
    if rewards.numel() % k:
        raise ValueError(f"group baseline: {rewards.numel()} rewards do not split into groups of k={k}")
    g = rewards.view(-1, k)
    return (g - g.mean(1, keepdim=True)).view(-1)


# ----------------------------------------------------------------------------- REINFORCE++ (Hu 2025)

def token_level_rewards(reward: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """(B, C) per-token rewards: the KL penalty at every completion token, the scalar reward at the last:

        r_t = -beta * kl_t + [t = T_i] * R_i,     T_i = last position of `mask` in row i
    """
    mask = mask.to(kl.dtype)
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & (mask > 0)
    return (-beta * kl + last * reward[:, None].to(kl.dtype)) * mask


def returns_to_go(token_rewards: Tensor, mask: Tensor) -> Tensor:
    """(B, C) undiscounted returns  G_t = sum_{s >= t} m_s r_s  (gamma = 1), zero outside the mask."""
    r = token_rewards * mask
    return r.flip(1).cumsum(1).flip(1) * mask


def masked_whiten(x: Tensor, mask: Tensor, eps: float = 1e-8, var_floor: float = 1e-8) -> Tensor:
    """(x - mu) / (sqrt(max(sigma^2, var_floor)) + eps) with mu, sigma^2 the mean and variance over
    all masked entries of the batch (REINFORCE++'s global normalisation), zero outside the mask.

    The floor (a standard deviation of 1e-4) keeps a batch whose values are all equal at
    advantages near zero: dividing its float round-off by a tiny sigma would blow noise up to
    unit-scale advantages and push the policy at random."""
    mask = mask.to(x.dtype)
    n = mask.sum().clamp(min=1)
    mu = (x * mask).sum() / n
    var = (((x - mu) * mask) ** 2).sum() / n
    return (x - mu) / (var.clamp(min=var_floor).sqrt() + eps) * mask


def clipped_pg_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                    clip: float = 0.2) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate on per-token advantages, averaged over all masked tokens of the batch:

        rho_t = exp(log pi(y_t) - log pi_old(y_t))
        L = -(1/sum m) sum_t m_t * min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)

    Returns (L, clip fraction = share of masked tokens where the clipped term is the smaller).
    Per-answer advantages (B,) are refused: they would broadcast along the wrong dimension, silently
    when B equals the completion length (`grpo_loss` takes those)."""
    if advantages.shape != logprobs.shape:
        raise ValueError(f"clipped_pg_loss: advantages of shape {tuple(advantages.shape)}, expected one per token, "
                         f"{tuple(logprobs.shape)} like the log-probs (per-answer advantages: A[:, None] * mask)")
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs.detach())
    adv = advantages.detach()
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip, 1 + clip) * adv
    n = mask.sum().clamp(min=1)
    loss = -(torch.minimum(unclipped, clipped) * mask).sum() / n
    frac = ((clipped < unclipped) * mask).sum() / n
    return loss, frac.detach()


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over the masked entries of the whole batch."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


# ----------------------------------------------------------------------------- GRPO (Shao et al. 2024) and Dr. GRPO (Liu et al. 2025)
#
# GRPO is REINFORCE++-baseline with three changes: each group's advantages are divided by the
# group's standard deviation (not whitened over the batch), the KL is a k3 loss, and the loss is
# each answer's token mean (then a mean over answers) instead of one mean over all the batch's
# tokens. Dr. GRPO takes two of those back: no standard deviation (a group whose rewards differ only
# a little, well above eps, gets unit-size advantages: prompts too easy or too hard for the policy
# weigh more than their differences warrant), and
# no 1/|y_i| (which lets a long wrong answer pay less per token than a short one).

def grpo_advantages(rewards: Tensor, k: int, scale: bool = True, eps: float = 1e-4) -> Tensor:
    """Group-relative advantages for `rewards` laid out as groups of k consecutive samples of one prompt:

        GRPO      (scale):    A_i = (R_i - mean_g R) / (std_g R + eps)
        Dr. GRPO  (no scale): A_i =  R_i - mean_g R

    std_g is the group's sample standard deviation (divided by k - 1, as TRL's GRPOTrainer takes
    it); eps keeps a group of equal rewards at A = 0. Returns (B,)."""
    if k < 2:
        raise ValueError(f"grpo: k (samples per prompt) must be >= 2 for a group baseline, got {k}")
    if rewards.numel() % k:
        raise ValueError(f"grpo: {rewards.numel()} rewards do not split into groups of k={k}")
    g = rewards.view(-1, k)
    centred = g - g.mean(1, keepdim=True)
    return (centred / (g.std(1, keepdim=True) + eps) if scale else centred).view(-1)


def grpo_loss(logprobs: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor | None, advantages: Tensor, mask: Tensor,
              clip: float = 0.2, beta: float = 0.0, max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """GRPO's objective as a loss (DeepSeekMath, eq. 3), per completion token t of sample i:

        rho_it = exp(log pi(y_it) - log pi_old(y_it))
        l_it   = -min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i) + beta * k3_it
        k3_it  = exp(log pi_ref(y_it) - log pi(y_it)) - (log pi_ref(y_it) - log pi(y_it)) - 1

        GRPO     (max_tokens None): L = (1/B) sum_i (1/|y_i|) sum_t m_it l_it     (each answer's token mean)
        Dr. GRPO (max_tokens = L):  L = 1/(B L) sum_i sum_t m_it l_it              (one constant for all)

    `advantages` (B,) per sample or (B, C) per token, `logprobs`, `old_logprobs`, `ref_logprobs`
    and `mask` (B, C); `ref_logprobs` None or beta 0: no KL term. The k3 term is differentiated
    through log pi (a loss, not a reward). Returns (L, clip fraction = share of masked tokens
    where the clipped term is the smaller)."""
    mask = mask.to(logprobs.dtype)
    adv = (advantages[:, None] if advantages.dim() == 1 else advantages).detach()
    ratio = torch.exp(logprobs - old_logprobs.detach())
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv
    per_token = -torch.minimum(unclipped, clipped)
    if beta and ref_logprobs is not None:
        per_token = per_token + beta * kl_per_token(logprobs, ref_logprobs.detach(), mask, "k3")
    per_token = per_token * mask
    if max_tokens is None:
        loss = (per_token.sum(1) / mask.sum(1).clamp(min=1)).mean()
    else:
        loss = per_token.sum() / (mask.shape[0] * max_tokens)
    frac = ((clipped < unclipped) * mask).sum() / mask.sum().clamp(min=1)
    return loss, frac.detach()
