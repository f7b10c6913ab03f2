"""Reward-model over-optimisation, measured with the tiny world's gold judge (notebook 09).

Gao, Schulman and Hilton 2022 ("Scaling Laws for Reward Model Overoptimization") fit gold reward
against the distance d = sqrt(KL(pi || pi_init)) travelled from the initial policy, with gold
measured from the initial policy's (R(0) = 0):

    best-of-n:  R_bon(d) = d (alpha - beta d)
    RL:         R_rl(d)  = d (alpha - beta log d)

This module holds the pure parts: best-of-n's expected scores from one set of samples (no
resampling noise), its KL, the two laws, their least-squares fits and peaks, and the reward-model
ensemble objectives of Coste et al. 2024. `CLAIMS` are the lab's predictions, fixed here before
any of its runs.

    bon = best_of_n_curve(proxy, gold, ns=[1, 2, 4, ..., 256])   # (P, N) scores of N samples per prompt
    fit = fit_law("bon", d, gold_gain)                            # alpha, beta, R^2, the peak
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LAWS = ("bon", "rl")

CLAIMS = (
    ("interior_peak", "best-of-n against the smallest proxy has an interior gold peak in n (gold at the largest n "
                      "is below gold at some smaller n)"),
    ("rl_below_bon", "RL reaches less gold than best-of-n at equal d (RL's fitted R_rl(d) below best-of-n's "
                     "fitted R_bon(d) over the d both reach)"),
    ("fits", "both laws fit their data with R^2 >= 0.9"),
    ("peak_rises", "best-of-n's fitted gold peak R* rises with the proxy's number of training pairs"),
    ("worst_case", "past the single reward model's best-of-n peak, the worst-case ensemble loses less gold from "
                   "its own peak than the single model does"),
    ("kl_frontier", "a KL penalty acts like early stopping (Gao et al.): RL runs with the penalty lie on the gold-vs-d "
                    "curve of the same method's runs without it (their points' mean residual from the no-penalty fit "
                    "is within the no-penalty runs' own residual spread), rather than above it"),
    ("rl_ensemble", "RL against the worst-case ensemble reaches more gold at its last evaluation than RL against "
                    "the single reward model of the same recipe and data"),
    ("rl_ensemble_kl", "with a KL penalty (RLOO k=4 + KL, the showdown's coefficient), RL against the worst-case "
                       "ensemble ends with more gold than RL against the single reward model, by more than 0.1"),
)
"""The over-optimisation lab's claims, written before its runs (issue text, Gao et al. 2022, Coste
et al. 2024) and reported whichever way they fall."""


def bon_kl(n: int | Tensor) -> float | Tensor:
    """The usual analytic KL of best-of-n sampling from its base policy,

        KL_bon(n) = log n - (n - 1) / n,

    exact only when no two samples tie; Beirami et al. 2024 show it is an upper bound on the true
    KL (the true value is smaller when the base policy repeats answers, as a peaked SFT policy does)."""
    if isinstance(n, Tensor):
        if bool((n < 1).any()):
            raise ValueError("bon_kl: n must be >= 1")
        n = n.to(torch.float64)
        return torch.log(n) - (n - 1) / n
    if n < 1:
        raise ValueError(f"bon_kl: n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(N: int, n: int) -> Tensor:
    """(N,) probability that the sample of rank i (0 = lowest proxy score of N) is the best of a
    uniformly random n-subset of the N samples:

        w_i = C(i, n - 1) / C(N, n)      (the other n - 1 drawn from the i samples below it)

    so E[score of the best of n] = sum_i w_i s_(i), exactly, from one draw of N >= n samples (the
    unbiased estimator of Nakano et al. 2021). Ties in the proxy are broken by sample order."""
    if not 1 <= n <= N:
        raise ValueError(f"best_of_n_weights: need 1 <= n <= N, got n={n}, N={N}")
    i = torch.arange(N, dtype=torch.float64)
    # log C(i, n-1) - log C(N, n), zero weight where i < n - 1
    log_w = (torch.lgamma(i + 1) - torch.lgamma(n * torch.ones_like(i)) - torch.lgamma((i - n + 2).clamp(min=1))
             - (math.lgamma(N + 1) - math.lgamma(n + 1) - math.lgamma(N - n + 1)))
    return torch.where(i >= n - 1, log_w.exp(), torch.zeros_like(i))


def best_of_n_per_prompt(proxy: Tensor, gold: Tensor, ns: list[int]) -> tuple[Tensor, Tensor]:
    """(P, len(ns)) expected proxy and gold, per prompt, of the answer with the highest proxy score among
    n drawn from the prompt's N samples, for each n in `ns` (`best_of_n_weights`; each row sorted once).
    proxy, gold: (P, N) scores of the same N samples per prompt."""
    if proxy.shape != gold.shape or proxy.dim() != 2:
        raise ValueError(f"best_of_n_curve: proxy and gold must both be (prompts, samples), got "
                         f"{tuple(proxy.shape)} and {tuple(gold.shape)}")
    order = torch.sort(proxy.to(torch.float64), dim=1, stable=True)
    w = torch.stack([best_of_n_weights(proxy.shape[1], n) for n in ns], 1)  # (N, len(ns))
    return order.values @ w, torch.gather(gold.to(torch.float64), 1, order.indices) @ w


def best_of_n_curve(proxy: Tensor, gold: Tensor, ns: list[int]) -> list[dict]:
    """Best-of-n against `proxy`, scored by `gold`: `best_of_n_per_prompt` averaged over prompts.
    Rows: n, proxy, gold (means over prompts), kl_bound (`bon_kl`), d = sqrt(kl_bound)."""
    p, g = best_of_n_per_prompt(proxy, gold, ns)
    return [{"n": n, "proxy": float(pm), "gold": float(gm), "kl_bound": bon_kl(n), "d": math.sqrt(bon_kl(n))}
            for n, pm, gm in zip(ns, p.mean(0).tolist(), g.mean(0).tolist())]


def law(kind: str, d: Tensor, alpha: float, beta: float) -> Tensor:
    """Gao et al.'s gold gain at distance d: 'bon' d (alpha - beta d); 'rl' d (alpha - beta log d)
    (0 at d = 0)."""
    d = torch.as_tensor(d, dtype=torch.float64)
    if kind == "bon":
        return d * (alpha - beta * d)
    if kind == "rl":
        return torch.where(d > 0, d * (alpha - beta * torch.log(d.clamp(min=1e-300))), torch.zeros_like(d))
    raise ValueError(f"law: kind must be one of {LAWS}, got {kind!r}")


@dataclass(frozen=True)
class Fit:
    """A least-squares fit of one law: its coefficients, R^2, and the peak (d*, R*) of the fitted curve
    (None when the curve has no interior maximum: beta <= 0)."""
    kind: str
    alpha: float
    beta: float
    r2: float
    d_star: float | None
    r_star: float | None


def fit_law(kind: str, d: Tensor | list[float], gain: Tensor | list[float]) -> Fit:
    """Least-squares fit of `law(kind)` to points (d_j, gain_j), through the origin (R(0) = 0):
    both laws are linear in (alpha, beta),

        bon: gain = alpha d - beta d^2,      rl: gain = alpha d - beta d log d,

    so the fit is one `lstsq`. R^2 = 1 - SS_res / SS_tot (SS_tot about the mean gain). Peaks:
    bon d* = alpha / (2 beta), R* = alpha^2 / (4 beta); rl d* = exp(alpha / beta - 1), R* = beta d*."""
    d = torch.as_tensor(d, dtype=torch.float64).flatten()
    y = torch.as_tensor(gain, dtype=torch.float64).flatten()
    if d.shape != y.shape or d.numel() < 3:
        raise ValueError(f"fit_law: need the same number (>= 3) of distances and gains, got {d.numel()} and {y.numel()}")
    if bool((d < 0).any()):
        raise ValueError("fit_law: distances d = sqrt(KL) must be >= 0")
    if kind == "bon":
        X = torch.stack([d, -d * d], 1)
    elif kind == "rl":
        X = torch.stack([d, -d * torch.where(d > 0, torch.log(d.clamp(min=1e-300)), torch.zeros_like(d))], 1)
    else:
        raise ValueError(f"fit_law: kind must be one of {LAWS}, got {kind!r}")
    alpha, beta = torch.linalg.lstsq(X, y[:, None]).solution.flatten().tolist()
    resid = y - law(kind, d, alpha, beta)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    d_star = r_star = None
    if beta > 0:
        if kind == "bon":
            d_star, r_star = alpha / (2 * beta), alpha * alpha / (4 * beta)
        else:
            d_star = math.exp(alpha / beta - 1)
            r_star = beta * d_star
    return Fit(kind, alpha, beta, r2, d_star, r_star)


def ensemble_score(scores: Tensor, objective: str = "mean", lam: float = 1.0) -> Tensor:
    """Combine an ensemble's scores, (M, ...) for M reward models, into one (Coste et al. 2024):

        mean:  (1/M) sum_m s_m
        worst: min_m s_m
        uwo:   mean - lam * var   (uncertainty-weighted: the intra-ensemble variance over the M models,
                                   population, as Coste et al. subtract it)

    Each model's scores should be on one scale first (standardised on the same samples)."""
    if scores.dim() < 1 or scores.shape[0] < 2:
        raise ValueError(f"ensemble_score: need scores of at least 2 models along dim 0, got shape {tuple(scores.shape)}")
    if objective == "mean":
        return scores.mean(0)
    if objective == "worst":
        return scores.min(0).values
    if objective == "uwo":
        return scores.mean(0) - lam * scores.var(0, unbiased=False)
    raise ValueError(f"ensemble_score: objective must be 'mean', 'worst' or 'uwo', got {objective!r}")


OBJECTIVES = ("mean", "worst", "uwo")


def standardise(scores: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(M, ...) scores of M reward models put on one scale: (s_m - mean_m) / std_m, with each
    model's mean and std taken once on a reference set (the SFT policy's answers)."""
    shape = (-1,) + (1,) * (scores.dim() - 1)
    return (scores - mean.view(shape).to(scores)) / std.view(shape).to(scores)


def rl_points(evals: list[dict]) -> tuple[list[float], list[float], list[float]]:
    """(d, gold gain, proxy gain) along an RL run from its held-out evaluations (`History.evals`,
    the first being step 0, the initial policy): d = sqrt(KL(pi || pi_init)) from each evaluation's
    `kl_ref` (a sample mean, clamped at 0), gains measured from the first evaluation's (R(0) = 0)."""
    ev = [e for e in evals if "kl_ref" in e and "gold_mean" in e]
    if not ev or ev[0].get("step", 0) != 0:
        raise ValueError("rl_points: expected evaluations with kl_ref and gold_mean, the first at step 0")
    d = [math.sqrt(max(e["kl_ref"], 0.0)) for e in ev]
    return (d, [e["gold_mean"] - ev[0]["gold_mean"] for e in ev],
            [e.get("proxy_mean", float("nan")) - ev[0].get("proxy_mean", float("nan")) for e in ev])


class Ensemble(torch.nn.Module):
    """Reward models combined into one reward (Coste et al. 2024): each member's score standardised
    by its mean and std on the SFT policy's answers (`standardise`), then `ensemble_score` with
    `objective` ('mean', 'worst', 'uwo': mean - lam * variance). It scores a rollout as a reward model does
    (`b2b.reward.rollout_reward_scores`), so RL trains against it unchanged; its weights, statistics
    and objective are its state, so a run's record names the ensemble by `fingerprint`.

        ens = Ensemble([rm0, rm1, rm2, rm3], mean=mu, std=sd, objective="worst")
        train(policy, tok, ens, prompts, cfg)"""

    def __init__(self, members, mean: Tensor, std: Tensor, objective: str = "worst", lam: float = 1.0):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"Ensemble: expected at least 2 reward models, got {len(members)}")
        if objective not in OBJECTIVES:
            raise ValueError(f"Ensemble: objective must be one of {OBJECTIVES}, got {objective!r}")
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (len(members),) or std.shape != (len(members),) or bool((std <= 0).any()):
            raise ValueError(f"Ensemble: expected one mean and one positive std per model ({len(members)}), got "
                             f"shapes {tuple(mean.shape)} and {tuple(std.shape)}")
        self.members = torch.nn.ModuleList(members)
        self.config = members[0].config  # the context and vocabulary checks read the first member's
        self.objective, self.lam = objective, float(lam)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("rule", torch.tensor([float(OBJECTIVES.index(objective)), self.lam]))

    def combine(self, scores: Tensor) -> Tensor:
        """(B,) ensemble reward of (M, B) member scores."""
        return ensemble_score(standardise(scores, self.mean, self.std), self.objective, self.lam)

    def rollout_scores(self, rollout, prompts: list | None = None) -> Tensor:
        """(B, 1) ensemble reward of a policy's rollout (each member read at the last real token)."""
        from b2b.reward import rollout_reward_scores, scalar_reward

        s = torch.stack([scalar_reward(rollout_reward_scores(m, rollout, prompts=prompts)) for m in self.members])
        return self.combine(s).unsqueeze(-1)
