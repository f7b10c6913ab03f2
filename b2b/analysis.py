"""Measurements behind the notebooks' claims: how noisy is each gradient estimator?

    res = gradient_variance(policy, tokenizer, reward_model, prompts, k=4, n_batches=12)
    res["leave-one-out"]["variance"] / res["moving average"]["variance"]

Every estimator sees the *same* sampled batches, so the comparison is paired: differences come
from the baseline alone, not from different samples.
"""
from __future__ import annotations

import torch

from b2b.advantages import reinforce_loss, rloo_advantages
from b2b.rollout import decode_completions, rollout_logprobs, sample_completions

ESTIMATORS = ("no baseline", "moving average", "leave-one-out")


def _flat_grad(policy, loss: torch.Tensor) -> torch.Tensor:
    policy.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]).detach().clone()


def gradient_variance(policy, tokenizer, reward_model, prompts: list[str], k: int = 4, n_batches: int = 12,
                      prompts_per_batch: int = 16, max_new_tokens: int = 64, decay: float = 0.9,
                      seed: int = 0, readout: str = "expected", shift: float = 0.0,
                      shifts: tuple[float, ...] | None = None) -> dict:
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
    one: g is linear in A, so with g(1) the gradient of A_i = 1,

        no baseline at c:  g(R + c) = g(R - b) + (b + c) g(1)
        moving average:    (R + c) - (b + c) = R - b       leave-one-out: unchanged by c

    three backward passes per batch whatever the number of shifts.
    """
    from b2b.reward import policy_rewards

    device = next(policy.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    moving, ones, loo = [], [], []
    baseline, means, baselines = None, [], []
    was_training = policy.training
    for j in range(n_batches + 1):
        idx = torch.randint(len(prompts), (prompts_per_batch,), generator=gen, device=device).tolist()
        batch = [prompts[i] for i in idx for _ in range(k)]
        policy.eval()
        ro = sample_completions(policy, tokenizer, batch, max_new_tokens, 1.0, gen)
        texts = decode_completions(tokenizer, ro)
        R = policy_rewards(reward_model, ro, batch, texts, ro.finished(tokenizer.eos_token_id), readout)
        mean = R.mean().item()
        if j == 0:  # warm-up batch: only starts the moving average
            baseline = mean
            continue
        means.append(mean)
        baselines.append(baseline)
        logp = rollout_logprobs(policy, ro)
        for store, adv in ((moving, R - baseline), (ones, torch.ones_like(R)), (loo, rloo_advantages(R, k))):
            store.append(_flat_grad(policy, reinforce_loss(adv, logp, ro.completion_mask)))
        baseline = decay * baseline + (1 - decay) * mean
    policy.zero_grad(set_to_none=True)
    policy.train(was_training)
    moving, ones, loo = torch.stack(moving), torch.stack(ones), torch.stack(loo)
    b = torch.tensor(baselines, dtype=moving.dtype, device=moving.device)[:, None]
    results = {}
    for c in (shifts if shifts is not None else (shift,)):
        out = {}
        for name, g in zip(ESTIMATORS, (moving + (b + c) * ones, moving, loo)):
            g_bar = g.mean(0)
            sq_dev = ((g - g_bar) ** 2).sum(1)
            var = sq_dev.mean().item()
            norm2 = g_bar.pow(2).sum().item()
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
