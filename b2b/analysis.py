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
                      seed: int = 0, readout: str = "expected") -> dict:
    """Spread of the REINFORCE gradient estimate over independent batches from the same policy.

    Each batch: `prompts_per_batch` prompts drawn at random, k samples each. Per batch and
    estimator, g = grad of  -(1/B) sum_i A_i log pi(y_i | x_i)  with
        no baseline:     A_i = R_i
        moving average:  A_i = R_i - b,  b the decay-weighted mean reward of the earlier batches
                         (the loop's baseline; one warm-up batch first)
        leave-one-out:   A_i = R_i - mean of the other k-1 rewards of the same prompt
    Returns, per estimator, `variance` = (1/N) sum_n ||g_n - g_bar||^2 (total variance over all
    parameters), `mean_norm` = ||g_bar|| and `snr` = ||g_bar||^2 / variance. The policy is not
    updated (its gradients are cleared at the end).
    """
    from b2b.train import policy_rewards

    device = next(policy.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    grads = {name: [] for name in ESTIMATORS}
    baseline = None
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
        logp = rollout_logprobs(policy, ro)
        for name, adv in (("no baseline", R), ("moving average", R - baseline),
                          ("leave-one-out", rloo_advantages(R, k))):
            grads[name].append(_flat_grad(policy, reinforce_loss(adv, logp, ro.completion_mask)))
        baseline = decay * baseline + (1 - decay) * mean
    policy.zero_grad(set_to_none=True)
    policy.train(was_training)
    out = {}
    for name, gs in grads.items():
        g = torch.stack(gs)
        g_bar = g.mean(0)
        var = ((g - g_bar) ** 2).sum(1).mean().item()
        norm2 = g_bar.pow(2).sum().item()
        out[name] = {"variance": var, "mean_norm": norm2 ** 0.5, "snr": norm2 / var if var > 0 else float("inf")}
    return out
