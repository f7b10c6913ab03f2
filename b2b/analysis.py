"""Measurements behind the notebooks' claims: how noisy is each gradient estimator?

    res = gradient_variance(policy, tokenizer, reward_model, prompts, k=4, n_batches=12)
    res["leave-one-out"]["variance"] / res["moving average"]["variance"]

Every estimator sees the *same* sampled batches, so the comparison is paired: differences come
from the baseline alone, not from different samples.
"""
from __future__ import annotations

import torch

from b2b.advantages import reinforce_loss, rloo_advantages
from b2b.memory import KEEP_GRADIENTS_BYTES
from b2b.rollout import decode_completions, rollout_logprobs, sample_completions

ESTIMATORS = ("no baseline", "moving average", "leave-one-out")


def _flat_grad(policy, loss: torch.Tensor) -> torch.Tensor:
    policy.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]).detach()  # a new tensor


def gradient_variance(policy, tokenizer, reward_model, prompts: list[str], k: int = 4, n_batches: int = 12,
                      prompts_per_batch: int = 16, max_new_tokens: int = 64, decay: float = 0.9,
                      seed: int = 0, readout: str = "expected", shift: float = 0.0,
                      shifts: tuple[float, ...] | None = None, gradient_checkpointing: bool = False,
                      keep_gradients_bytes: int = KEEP_GRADIENTS_BYTES) -> dict:
    """Spread of the REINFORCE gradient estimate over independent batches from the same policy.

    Each batch: `prompts_per_batch` prompts drawn at random, k samples each. Per batch and
    estimator, g = grad of  -(1/B) sum_i A_i log pi(y_i | x_i)  with
        no baseline:     A_i = R_i
        moving average:  A_i = R_i - b,  b the decay-weighted mean reward of the earlier batches
                         (the loop's baseline; one warm-up batch first)
        leave-one-out:   A_i = R_i - mean of the other k-1 rewards of the same prompt
    `shift` is added to every reward (R_i + c): the optimum is the same, the expected gradient is
    the same, but an estimator without a baseline now multiplies every log-prob gradient by a
    large number (where the rewards' mean is small next to their spread, the raw rewards hide that).
    Returns, per estimator, `variance` = (1/N) sum_n ||g_n - g_bar||^2 (total variance over all
    parameters), `mean_norm` = ||g_bar||, `snr` = ||g_bar||^2 / variance and `sq_dev`, the N
    per-batch ||g_n - g_bar||^2 (for `variance_ratio`'s interval), and `reward_mean`, the mean
    (shifted) reward of the measured batches. The policy is not updated (its
    gradients are cleared at the end).

    `shifts` (several c at once) returns {c: that result} from the same batches for the cost of
    one: g is linear in A, so with m_n = g(R - b), o_n = g(1) the gradient of A_i = 1,

        no baseline at c:  g(R + c) = m_n + (b_n + c) o_n
        moving average:    (R + c) - (b + c) = R - b       leave-one-out: unchanged by c

    three backward passes per batch whatever the number of shifts.

    Memory: no gradient is kept per batch on the device unless they fit `keep_gradients_bytes`.
    The first pass samples and scores every batch (the rollouts are kept: token ids) and sums
    S_m = sum m_n, S_o = sum o_n, S_bo = sum b_n o_n, S_l = sum l_n; the second recomputes each
    g_n (or reads it back when kept) for its deviation from the mean g_bar = S / N,

        ||g_n - g_bar||^2 = ||g_n||^2 - 2 g_n . g_bar + ||g_bar||^2,

    where every term is a dot product of m_n, o_n, l_n with those sums, so every shift's figures
    come from the same few numbers per batch. `gradient_checkpointing`: the policy's log-probs are
    taken with activation checkpointing on (a real model on a small GPU).
    """
    from b2b.models import checkpointing, is_checkpointing
    from b2b.reward import policy_rewards

    device = next(policy.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    batches, means, baselines = [], [], []
    baseline = None
    was_training, was_checkpointing = policy.training, is_checkpointing(policy)
    policy.eval()
    for j in range(n_batches + 1):  # sampling and scoring: the rollouts, rewards and baselines
        idx = torch.randint(len(prompts), (prompts_per_batch,), generator=gen, device=device).tolist()
        batch = [prompts[i] for i in idx for _ in range(k)]
        ro = sample_completions(policy, tokenizer, batch, max_new_tokens, 1.0, gen)
        texts = decode_completions(tokenizer, ro)
        R = policy_rewards(reward_model, ro, batch, texts, ro.finished(tokenizer.eos_token_id), readout)
        mean = R.mean().item()
        if j == 0:  # warm-up batch: only starts the moving average
            baseline = mean
            continue
        means.append(mean)
        baselines.append(baseline)
        batches.append((ro, R, baseline))
        baseline = decay * baseline + (1 - decay) * mean
    n_params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    keep = 3 * n_batches * n_params * 4 <= keep_gradients_bytes
    kept = []
    if gradient_checkpointing:
        checkpointing(policy, True)
        policy.train()  # transformers checkpoints only in training mode (the course's models have no dropout)

    def grads(ro, R, b):
        logp = rollout_logprobs(policy, ro)
        return [_flat_grad(policy, reinforce_loss(adv, logp, ro.completion_mask))
                for adv in (R - b, torch.ones_like(R), rloo_advantages(R, k))]

    try:
        sums = None
        norms = []  # per batch: ||m||^2, m.o, ||o||^2, ||l||^2
        for ro, R, b in batches:  # first pass: the sums
            m, o, l = grads(ro, R, b)
            if sums is None:
                sums = {"m": torch.zeros_like(m), "o": torch.zeros_like(o), "bo": torch.zeros_like(o),
                        "l": torch.zeros_like(l)}
            sums["m"] += m
            sums["o"] += o
            sums["bo"] += b * o
            sums["l"] += l
            norms.append(torch.stack([m @ m, m @ o, o @ o, l @ l]).double().cpu())
            if keep:
                kept.append((m, o, l))
            del m, o, l
        dots = []  # per batch: m.S_m, m.S_bo, m.S_o, o.S_m, o.S_bo, o.S_o, l.S_l
        for j, (ro, R, b) in enumerate(batches):  # second pass: each gradient against the sums
            m, o, l = kept[j] if keep else grads(ro, R, b)
            dots.append(torch.stack([m @ sums["m"], m @ sums["bo"], m @ sums["o"], o @ sums["m"], o @ sums["bo"],
                                     o @ sums["o"], l @ sums["l"]]).double().cpu())
            del m, o, l
        S = {name: v.double() for name, v in sums.items()}
        gram = {("m", "m"): S["m"] @ S["m"], ("m", "bo"): S["m"] @ S["bo"], ("m", "o"): S["m"] @ S["o"],
                ("bo", "bo"): S["bo"] @ S["bo"], ("bo", "o"): S["bo"] @ S["o"], ("o", "o"): S["o"] @ S["o"],
                ("l", "l"): S["l"] @ S["l"]}
        gram = {key: v.item() for key, v in gram.items()}
        del sums, S, kept
    finally:
        policy.zero_grad(set_to_none=True)
        if gradient_checkpointing and not was_checkpointing:
            checkpointing(policy, False)
        policy.train(was_training)
    N = len(batches)
    nm = torch.stack(norms)   # (N, 4)
    dt = torch.stack(dots)    # (N, 7)
    b = torch.tensor(baselines, dtype=torch.float64)
    results = {}
    for c in (shifts if shifts is not None else (shift,)):
        # no baseline at c: g_n = m_n + a_n o_n, a_n = b_n + c; N g_bar = S_m + S_bo + c S_o
        a = b + c
        sq_norm = {"no baseline": nm[:, 0] + 2 * a * nm[:, 1] + a * a * nm[:, 2],
                   "moving average": nm[:, 0], "leave-one-out": nm[:, 3]}
        dot_sum = {"no baseline": dt[:, 0] + dt[:, 1] + c * dt[:, 2] + a * (dt[:, 3] + dt[:, 4] + c * dt[:, 5]),
                   "moving average": dt[:, 0], "leave-one-out": dt[:, 6]}
        total2 = {"no baseline": gram["m", "m"] + gram["bo", "bo"] + c * c * gram["o", "o"]
                  + 2 * (gram["m", "bo"] + c * gram["m", "o"] + c * gram["bo", "o"]),
                  "moving average": gram["m", "m"], "leave-one-out": gram["l", "l"]}
        out = {}
        for name in ESTIMATORS:
            norm2 = max(total2[name], 0.0) / N**2  # ||g_bar||^2
            sq_dev = (sq_norm[name] - 2 * dot_sum[name] / N + norm2).clamp_min(0.0)
            var = sq_dev.mean().item()
            out[name] = {"variance": var, "mean_norm": norm2 ** 0.5, "snr": norm2 / var if var > 0 else float("inf"),
                         "sq_dev": sq_dev.tolist(), "reward_mean": sum(means) / len(means) + c}
        results[c] = out
    return results if shifts is not None else results[shift]


def variance_ratio(res: dict, a: str, b: str, n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> dict:
    """The variance of estimator `a` over that of `b` from one `gradient_variance` result, with a
    paired bootstrap interval: the same batches are resampled for both (they saw the same samples),

        ratio = mean_n d_n(a) / mean_n d_n(b),   d_n = ||g_n - g_bar||^2,

    and the interval is the (1 - level) / 2 and (1 + level) / 2 quantiles of the ratio over
    `n_boot` resamples of the N batches (the deviations are taken from the full-sample mean, a
    first-order approximation that is good when N is a few dozen). Returns {ratio, lo, hi, n}."""
    da, db = torch.tensor(res[a]["sq_dev"], dtype=torch.float64), torch.tensor(res[b]["sq_dev"], dtype=torch.float64)
    if da.numel() != db.numel() or da.numel() < 2:
        raise ValueError(f"variance_ratio: expected the same N >= 2 batches for both, got {da.numel()} and {db.numel()}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(da.numel(), (n_boot, da.numel()), generator=g)
    boot = (da[idx].mean(1) / db[idx].mean(1)).sort().values
    lo, hi = boot[int((1 - level) / 2 * n_boot)].item(), boot[min(n_boot - 1, int((1 + level) / 2 * n_boot))].item()
    return {"ratio": (da.mean() / db.mean()).item(), "lo": lo, "hi": hi, "n": da.numel()}
