"""The over-optimisation lab's measurements (notebook 09): best-of-n against a proxy reward model,
scored by the tiny world's gold judge.

    python -m b2b.tools.overopt bon --profile tiny --n 256 --prompts 512 --out runs/overopt
    python -m b2b.tools.overopt ladder --profile tiny --pairs 1000 3000 10000 30000 --out runs/overopt
    python -m b2b.tools.overopt ensemble --profile tiny --pairs 10000 --seeds 0 1 2 3 --out runs/overopt
    python -m b2b.tools.overopt rl --profile tiny --rewards single worst --out runs/overopt
    python -m b2b.tools.overopt table --dir data/runs/overopt-tiny     # the shipped records, with the law's fit
    python -m b2b.tools.overopt all --profile tiny --out runs/overopt  # every record above, in one command

`bon_samples` draws n answers per held-out prompt from the SFT policy once (batched) and keeps
their gold ratings; `bon_scores` scores the same answers with a reward model; `bon_curve` turns
the two into best-of-n's expected gold and proxy for every n up to the number drawn
(`b2b.overopt.best_of_n_curve`: exact from one draw, no resampling), with a bootstrap interval over
prompts. The samples and scores are cached under `out` (safetensors and JSON), the curve written
as `bon-<reward model>.json`, the record the notebook reads back.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from b2b.overopt import best_of_n_curve, best_of_n_per_prompt

DOUBLINGS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def ns_up_to(n: int) -> list[int]:
    """The curve's n: powers of two up to n, and n itself."""
    return sorted({k for k in DOUBLINGS if k <= n} | {n})


def bon_samples(policy, tokenizer, prompts: list[str], n: int, seed: int = 0, max_new_tokens: int = 64,
                batch_size: int = 512) -> dict:
    """n answers to each prompt from `policy` at temperature 1, sampled in batches of `batch_size`
    with one seeded generator: texts and finished flags as (P, n) nested lists, and `gold`, the
    gold judge's (P, n) ratings (tiny world)."""
    from b2b.evaluate import sample_many
    from b2b.tinyworld.gold import judge

    flat = [p for p in prompts for _ in range(n)]
    s = sample_many(policy, tokenizer, flat, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed)
    gold = torch.tensor([judge(p, t, f).rating for p, t, f in zip(flat, s["texts"], s["finished"])],
                        dtype=torch.float32).view(len(prompts), n)
    rows = lambda xs: [xs[i * n:(i + 1) * n] for i in range(len(prompts))]  # noqa: E731
    return {"prompts": prompts, "n": n, "seed": seed, "texts": rows(s["texts"]), "finished": rows(s["finished"]),
            "gold": gold}


def bon_scores(reward_model, tokenizer, samples: dict, readout: str = "expected") -> torch.Tensor:
    """(P, n) proxy rewards of `samples`' answers (`b2b.reward.score_responses`, the end-of-turn
    token only where the answer finished)."""
    from b2b.reward import score_responses

    P, n = samples["gold"].shape
    flat_p = [p for p in samples["prompts"] for _ in range(n)]
    flat_t = [t for row in samples["texts"] for t in row]
    flat_f = [f for row in samples["finished"] for f in row]
    with torch.no_grad():
        return score_responses(reward_model, tokenizer, flat_p, flat_t, readout, finished=flat_f).view(P, n).float()


def bon_curve(proxy: torch.Tensor, gold: torch.Tensor, ns: list[int] | None = None, n_boot: int = 200,
              seed: int = 0) -> list[dict]:
    """`best_of_n_curve` rows, each with `gold_gain` (gold minus n = 1's, so R(0) = 0 as in Gao et al.)
    and 95% bootstrap intervals over prompts (prompts resampled with replacement, the same resamples
    for every n): `gold_lo`, `gold_hi` of the gold, `gain_lo`, `gain_hi` of the gain over n = 1
    (paired: both on each resample; None when the curve has no n = 1)."""
    ns = ns or ns_up_to(proxy.shape[1])
    rows = best_of_n_curve(proxy, gold, ns)
    base = rows[0]["gold"] if ns[0] == 1 else best_of_n_curve(proxy, gold, [1])[0]["gold"]
    per_prompt = best_of_n_per_prompt(proxy, gold, ns)[1]  # (P, len(ns)): a resample of prompts only averages rows
    g = torch.Generator().manual_seed(seed)
    P = proxy.shape[0]
    boots = torch.stack([per_prompt[torch.randint(P, (P,), generator=g)].mean(0) for _ in range(n_boot)])
    lo, hi = torch.quantile(boots, 0.025, dim=0).tolist(), torch.quantile(boots, 0.975, dim=0).tolist()
    gains = boots - boots[:, :1] if ns[0] == 1 else None  # the gain over n = 1 on the same resample: paired
    g_lo, g_hi = ((torch.quantile(gains, q, dim=0).tolist() for q in (0.025, 0.975)) if gains is not None
                  else ([None] * len(ns), [None] * len(ns)))
    for r, a, b, c, d in zip(rows, lo, hi, g_lo, g_hi):
        r.update(gold_gain=r["gold"] - base, gold_lo=a, gold_hi=b, gain_lo=c, gain_hi=d)
    return rows


def distinct_answers(samples: dict) -> float:
    """The mean number of different answers among a prompt's n samples: below n, the policy repeats
    itself, and best-of-n's KL is below its analytic bound (`b2b.overopt.bon_kl`)."""
    return sum(len(set(row)) for row in samples["texts"]) / len(samples["texts"])


def save_samples(samples: dict, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({"gold": samples["gold"].contiguous()}, str(out / "bon-gold.safetensors"))
    (out / "bon-samples.json").write_text(json.dumps({k: samples[k] for k in ("prompts", "n", "seed", "texts",
                                                                              "finished")}))


def load_samples(out: Path) -> dict | None:
    from safetensors.torch import load_file

    if not (out / "bon-samples.json").exists() or not (out / "bon-gold.safetensors").exists():
        return None
    s = json.loads((out / "bon-samples.json").read_text())
    s["gold"] = load_file(str(out / "bon-gold.safetensors"))["gold"]
    return s


def ensure_samples(profile, out: Path, n: int = 256, n_prompts: int | None = None, seed: int = 0,
                   say=print) -> tuple[dict, dict]:
    """(samples, seconds): the cached best-of-n samples in `out` when they are these (n, prompts,
    seed), else sampled now from the profile's SFT policy and cached."""
    from b2b.data import heldout_prompts
    from b2b.models import load_policy, load_tokenizer

    if not profile.world:
        raise ValueError(f"overopt: profile {profile.name!r} has no gold judge; best-of-n needs the tiny world")
    prompts = heldout_prompts(profile, n_prompts)
    samples = load_samples(out)
    seconds = {}
    if samples is None or samples["n"] != n or samples["prompts"] != prompts or samples["seed"] != seed:
        t = time.perf_counter()
        samples = bon_samples(load_policy(profile.policy), load_tokenizer(profile.policy), prompts, n, seed,
                              profile.max_new_tokens)
        seconds["sample"] = time.perf_counter() - t
        save_samples(samples, out)
        say(f"overopt: {len(prompts)} prompts x {n} answers sampled in {seconds['sample']:.0f} s -> {out}")
    return samples, seconds


def run_bon(profile, out: str | Path, n: int = 256, n_prompts: int | None = None, reward_models: dict | None = None,
            seed: int = 0, say=print) -> dict:
    """Sample (or read back) n answers per held-out prompt from the profile's SFT policy, score them with
    each reward model in `reward_models` ({name: path}; the profile's level-1 model by default) and
    write `bon-<name>.json` per model: the settings, the seconds each stage took and the curve."""
    from b2b.models import fingerprint, load_reward_model, load_tokenizer
    from b2b.reward_models import shipped_reward_model

    out = Path(out)
    samples, seconds = ensure_samples(profile, out, n, n_prompts, seed, say)
    prompts = samples["prompts"]
    if not reward_models:
        shipped = shipped_reward_model(profile, 1)
        if shipped is None:
            raise ValueError(f"overopt: profile {profile.name!r} ships no level-1 reward model; name one with "
                             "--reward-model NAME=PATH")
        reward_models = {"rm-level1": shipped}
    result = {}
    for name, path in reward_models.items():
        t = time.perf_counter()
        rm = load_reward_model(path)
        proxy = bon_scores(rm, load_tokenizer(path), samples)
        rows = bon_curve(proxy, samples["gold"])
        secs = {**seconds, "score": time.perf_counter() - t}
        record = {"reward_model": name, "reward_model_fingerprint": fingerprint(rm), "prompts": len(prompts), "n": n,
                  "seed": seed, "seconds": secs, "distinct_answers": distinct_answers(samples), "curve": rows}
        if (Path(path) / "b2b_metrics.json").exists():  # a model `b2b` trained (the shipped one): its metrics
            m = json.loads((Path(path) / "b2b_metrics.json").read_text())
            record["reward_model_metrics"] = {k: m.get(k) for k in ("pair_accuracy", "gold_accuracy", "gold_spearman",
                                                                    "train_seconds", "train_pairs")}
        (out / f"bon-{name}.json").write_text(json.dumps(record, indent=1))
        peak = max(rows, key=lambda r: r["gold"])
        say(f"overopt: {name}: gold {rows[0]['gold']:.2f} at n = 1, peak {peak['gold']:.2f} at n = {peak['n']}, "
            f"{rows[-1]['gold']:.2f} at n = {rows[-1]['n']} (KL bound {rows[-1]['kl_bound']:.2f} nats)")
        result[name] = record
    return result


LADDER = (1_000, 3_000, 10_000, 30_000)
"""The proxy's scale: level-1 reward models on the first N training pairs (the shipped recipe
otherwise; the full 100,000 is the shipped `rm-level1`)."""


def run_ladder(profile, out: str | Path, pairs=LADDER, n: int = 256, n_prompts: int | None = None, seed: int = 0,
               say=print) -> dict:
    """Train a level-1 reward model on the first N pairs for each N in `pairs` (`b2b.reward_models.reward_stage`,
    the shipped recipe with `limit=N`, seed 0: `train_member`; saved under `out/rm-<N>`, read back
    when there), then best-of-n against each (`run_bon`, the same cached samples). Each record also
    keeps the reward model's held-out pair accuracy, gold agreement and Spearman with gold, and its
    training seconds."""
    out = Path(out)
    result = {}
    for N in pairs:
        path = train_member(profile, out, N, 0, say)
        name = path.name
        rec = run_bon(profile, out, n, n_prompts, {name: path}, seed, say)[name]
        rec["reward_model_metrics"] = json.loads((path / "b2b_ladder.json").read_text())
        (out / f"bon-{name}.json").write_text(json.dumps(rec, indent=1))
        result[name] = rec
    return result


ENSEMBLE_PAIRS = 10_000
ENSEMBLE_SEEDS = (0, 1, 2, 3)
"""The ensemble: four level-1 reward models on the same first 10,000 pairs, seeds 0-3 (seed 0 is
the ladder's `rm-10000`), the proxy scale whose best-of-n over-optimises most clearly (gold at
n = 256 below gold at n = 1)."""
UWO_LAMBDA = 1.0


def member_name(pairs: int, seed: int) -> str:
    return f"rm-{pairs}" if seed == 0 else f"rm-{pairs}-seed{seed}"


def train_member(profile, out: Path, pairs: int, seed: int, say=print) -> Path:
    """A level-1 reward model on the first `pairs` pairs with `seed` (the shipped recipe otherwise),
    saved under `out/<member_name>` with its metrics, or read back when there."""
    from b2b.recipes import reward_config
    from b2b.reward_models import reward_stage

    path = out / member_name(pairs, seed)
    meta = path / "b2b_ladder.json"
    if not meta.exists():
        cfg = reward_config(profile, 1, limit=pairs, eval_every=10**9, seed=seed)
        _, _, metrics, history, _ = reward_stage(profile, 1, cfg=cfg, out=path, progress=False)
        meta.write_text(json.dumps({"pairs": pairs, "seed": seed, "steps": len(history), **{k: metrics.get(k) for k in (
            "pair_accuracy", "gold_accuracy", "gold_spearman", "train_seconds")}}))
        say(f"overopt: reward model on {pairs:,} pairs, seed {seed}: accuracy {metrics['pair_accuracy']:.3f}, "
            f"Spearman with gold {metrics.get('gold_spearman', float('nan')):.3f}, {metrics['train_seconds']:.0f} s")
    return path


def member_scores(path: Path, samples: dict) -> torch.Tensor:
    """(P, N) proxy scores of the cached samples by the reward model at `path`, cached beside it."""
    from safetensors.torch import load_file, save_file

    from b2b.models import load_reward_model, load_tokenizer

    cache = path / "bon-scores.safetensors"
    P, N = samples["gold"].shape
    if cache.exists():
        s = load_file(str(cache))["scores"]
        if tuple(s.shape) == (P, N):
            return s
    s = bon_scores(load_reward_model(path), load_tokenizer(path), samples)
    save_file({"scores": s.contiguous()}, str(cache))
    return s


def load_ensemble(out: str | Path, pairs: int = ENSEMBLE_PAIRS, seeds=ENSEMBLE_SEEDS, objective: str = "worst",
                  lam: float = UWO_LAMBDA, record: str | Path | None = None):
    """The `b2b.overopt.Ensemble` of the members in `out`, standardised by the statistics the
    ensemble record (`record`, default `out/ensemble-rm-<pairs>.json`) keeps."""
    from b2b.models import load_reward_model
    from b2b.overopt import Ensemble

    out = Path(out)
    rec = json.loads(Path(record or out / f"ensemble-rm-{pairs}.json").read_text())
    members = {m["seed"]: m for m in rec["members"]}
    return Ensemble([load_reward_model(out / member_name(pairs, s)) for s in seeds],
                    mean=[members[s]["mean"] for s in seeds], std=[members[s]["std"] for s in seeds],
                    objective=objective, lam=lam)


def run_ensemble(profile, out: str | Path, pairs: int = ENSEMBLE_PAIRS, seeds=ENSEMBLE_SEEDS, n: int = 256,
                 n_prompts: int | None = None, seed: int = 0, lam: float = UWO_LAMBDA, say=print) -> dict:
    """Best-of-n against an ensemble of reward models (Coste et al. 2024): members trained on the
    same `pairs` with each seed in `seeds` (`train_member`), each standardised by its mean and std
    on the SFT samples, combined by mean, worst case and uncertainty-weighted (mean - lam * variance)
    (`b2b.overopt.ensemble_score`). Writes `ensemble-rm-<pairs>.json`: every member's own curve
    ("seed0", ...) and the three objectives' ("mean", "worst", "uwo"), each as `bon_curve` rows."""
    from b2b.models import fingerprint, load_reward_model
    from b2b.overopt import OBJECTIVES, Ensemble, ensemble_score, standardise

    out = Path(out)
    samples, _ = ensure_samples(profile, out, n, n_prompts, seed, say)
    t = time.perf_counter()
    paths = [train_member(profile, out, pairs, s, say) for s in seeds]
    scores = torch.stack([member_scores(p, samples) for p in paths])  # (M, P, N)
    mean, std = scores.flatten(1).mean(1), scores.flatten(1).std(1)
    z = standardise(scores, mean, std)
    curves = {f"seed{s}": bon_curve(scores[i], samples["gold"]) for i, s in enumerate(seeds)}
    for obj in ("mean", "worst", "uwo"):
        curves[obj] = bon_curve(ensemble_score(z, obj, lam), samples["gold"])
    members = []
    for s, p, m, sd in zip(seeds, paths, mean.tolist(), std.tolist()):
        members.append({"seed": s, "name": member_name(pairs, s), "fingerprint": fingerprint(load_reward_model(p)),
                        "mean": m, "std": sd, "metrics": json.loads((p / "b2b_ladder.json").read_text())})
    models = [load_reward_model(p) for p in paths]
    prints = {obj: fingerprint(Ensemble(models, mean, std, obj, lam)) for obj in OBJECTIVES}  # what RL runs record
    record = {"pairs": pairs, "seeds": list(seeds), "lam": lam, "prompts": len(samples["prompts"]), "n": n,
              "seed": seed, "seconds": time.perf_counter() - t, "members": members, "ensemble_fingerprints": prints,
              "curves": curves}
    (out / f"ensemble-rm-{pairs}.json").write_text(json.dumps(record, indent=1))
    for name, c in curves.items():
        peak = max(c, key=lambda r: r["gold"])
        say(f"overopt: {name}: peak gold {peak['gold']:.2f} at n = {peak['n']}, {c[-1]['gold']:.2f} at n = {c[-1]['n']}")
    return record


RL_METHOD = "RLOO k=4, no KL"
RL_STEPS = 300
RL_METHODS = {"": RL_METHOD, "-kl": "RLOO k=4 + KL"}
"""The RL runs against the ensemble, by their folders' suffix: without a KL penalty (`rl-<reward>-<pairs>`),
and with the showdown's (`rl-<reward>-<pairs>-kl`, Coste et al.'s setting)."""


def rl_run_dir(out: str | Path, reward: str, pairs: int, method: str = RL_METHOD) -> Path:
    """Where `run_rl_ensemble` keeps the run of `method` against `reward` ('single', 'worst', ...)."""
    tag = next((t for t, m in RL_METHODS.items() if m == method), None)
    if tag is None:
        raise ValueError(f"overopt: RL against the ensemble runs {sorted(RL_METHODS.values())}, not {method!r}")
    return Path(out) / f"rl-{reward}-{pairs}{tag}"


def run_rl_ensemble(profile, out: str | Path, pairs: int = ENSEMBLE_PAIRS, seeds=ENSEMBLE_SEEDS,
                    rewards=("single", "worst"), method: str = RL_METHOD, steps: int = RL_STEPS, rl_seed: int = 0,
                    say=print) -> dict:
    """RL (the showdown's `method`, `steps` steps, evaluated every 25 on the held-out prompts with the
    KL to the SFT policy) against the single reward model of seed `seeds[0]` and against the ensemble
    of `run_ensemble` with each objective in `rewards`; each run in `rl_run_dir` (`out/rl-<reward>-<pairs>`,
    `-kl` after it for RLOO + KL) (`b2b.tools.showdown.cached_run`: read back when finished).
    Returns {reward: History}."""
    from b2b.models import load_reward_model
    from b2b.recipes import method_config
    from b2b.tools.showdown import cached_run

    out = Path(out)
    cfg = method_config(profile, method, rl_seed, steps)
    result = {}
    for r in rewards:
        rm = (load_reward_model(out / member_name(pairs, seeds[0])) if r == "single"
              else load_ensemble(out, pairs, seeds, objective=r))
        t = time.perf_counter()
        h = cached_run(profile, cfg, rl_run_dir(out, r, pairs, method), reward_model=rm, progress=False)
        say(f"overopt: RL ({method}) against {r}: gold {h.evals[0]['gold_mean']:.2f} -> {h.evals[-1]['gold_mean']:.2f}, "
            f"KL {h.evals[-1]['kl_ref']:.1f} nats ({time.perf_counter() - t:.0f} s)")
        result[r] = h
    return result


def record_evals(run_dir: str | Path) -> list[dict]:
    """The held-out evaluations of a run directory or of its shipped record (evals.jsonl or .gz)."""
    import gzip

    d = Path(run_dir)
    if (d / "evals.jsonl").exists():
        text = (d / "evals.jsonl").read_text()
    elif (d / "evals.jsonl.gz").exists():
        text = gzip.decompress((d / "evals.jsonl.gz").read_bytes()).decode()
    else:
        raise FileNotFoundError(f"{d}: no evals.jsonl(.gz): not a run or a run record")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def method_names() -> dict[str, str]:
    """The showdown's folder names of its methods -> their names ('rloo-k-4-kl' -> 'RLOO k=4 + KL')."""
    from b2b.recipes import METHODS
    from b2b.tools.showdown import _slug

    return {_slug(m): m for m in METHODS}


def rl_runs(record_dirs) -> list[dict]:
    """One row per RL run directory or record: its method (the folder name less `-seedN`), seed,
    kl_coef, algorithm, its trajectory (`b2b.overopt.rl_points`: d, gold gain, proxy gain) and the fit
    of Gao et al.'s RL law to it."""
    from b2b.overopt import fit_law, rl_points

    rows = []
    for d in map(Path, record_dirs):
        cfg = json.loads((d / "config.json").read_text())
        dist, gain, proxy = rl_points(record_evals(d))
        name = d.name
        method, _, seed = name.rpartition("-seed") if "-seed" in name else (name, "", "")
        fit = fit_law("rl", dist, gain) if len(dist) >= 3 else None  # a law of two unknowns needs three points
        if fit is None:
            from b2b.overopt import Fit
            fit = Fit("rl", float("nan"), float("nan"), float("nan"), None, None)
        inside = fit.d_star is not None and fit.d_star <= max(dist)
        rows.append({"run": name, "method": method, "name": method_names().get(method, method), "seed": int(seed) if seed.isdigit() else cfg.get("seed"),
                     "algo": cfg["algo"], "kl_coef": cfg["kl_coef"], "d": dist, "gold_gain": gain,
                     "proxy_gain": proxy, "alpha": fit.alpha, "beta": fit.beta, "r2": fit.r2,
                     "d_star": fit.d_star, "r_star": fit.r_star, "peak_in_range": inside})
    return rows


def rl_vs_bon(rl: dict, bon: dict, points: int = 50) -> dict:
    """RL's fitted curve against best-of-n's (rows of `rl_runs` and `bon_fit`) on `points` distances
    in (0, d_max], d_max the smaller of the two's largest measured d: `below`, whether R_rl(d) <= R_bon(d)
    at every one, `gap`, the mean of R_rl(d) - R_bon(d) over them (negative: RL gains less gold),
    `below_measured`, the same from RL's first measured distance `first_d` on, and `above_up_to`, the
    largest d where RL's fit is above (None: nowhere). (A fit of the RL law with beta > 0 has an infinite
    slope at d = 0, so it starts above any best-of-n fit, below the grid's first distance d_max / points
    when not on it.)"""
    from b2b.overopt import law

    d_max = min(max(rl["d"]), max(bon["d"]))
    d = torch.linspace(d_max / points, d_max, points, dtype=torch.float64)
    diff = law("rl", d, rl["alpha"], rl["beta"]) - law("bon", d, bon["alpha"], bon["beta"])
    first = min((x for x in rl["d"] if x > 0), default=d_max)  # RL's first measured distance
    measured = d >= first
    above = d[diff > 0]
    return {"d_max": d_max, "below": bool((diff <= 0).all()), "gap": float(diff.mean()), "first_d": first,
            "below_measured": bool((diff[measured] <= 0).all()), "above_up_to": float(above.max()) if len(above) else None}


def bon_fit(record: dict) -> dict:
    """A best-of-n record's measured d and gold gain with the fit of Gao et al.'s best-of-n law."""
    from b2b.overopt import fit_law

    c = record["curve"] if "curve" in record else record
    d, gain = [r["d"] for r in c], [r["gold_gain"] for r in c]
    f = fit_law("bon", d, gain)
    return {"d": d, "gold_gain": gain, "alpha": f.alpha, "beta": f.beta, "r2": f.r2, "d_star": f.d_star,
            "r_star": f.r_star}


def kl_frontier(without: list[dict], penalised: list[dict]) -> dict:
    """Does a KL penalty move the gold-vs-d frontier, or stop the run early on it (Gao et al.)?
    Gao et al.'s RL law is fitted to the pooled points of the runs `without` the penalty (rows of
    `rl_runs`); each penalised run's points (d > 0, within the unpenalised runs' d) get their mean
    residual from that fit, and so does each unpenalised run over the same d range. A penalised run
    is `on_frontier` when its mean residual lies within the unpenalised runs' own (between their
    smallest and largest: where the unpenalised runs themselves lie), `above` when it is above all of
    them (more gold at equal d than any unpenalised run)."""
    from b2b.overopt import fit_law, law

    d = [x for r in without for x in r["d"]]
    g = [x for r in without for x in r["gold_gain"]]
    fit = fit_law("rl", d, g)
    d_top = max(d)

    def mean_residual(run: dict, d_max: float) -> float | None:
        pts = [(x, y) for x, y in zip(run["d"], run["gold_gain"]) if 0 < x <= d_max]
        if not pts:
            return None
        xs = torch.tensor([p[0] for p in pts], dtype=torch.float64)
        return float((torch.tensor([p[1] for p in pts], dtype=torch.float64) - law("rl", xs, fit.alpha, fit.beta)).mean())

    rows = []
    for run in penalised:
        d_max = min(max(run["d"]), d_top)
        own = [m for m in (mean_residual(r, d_max) for r in without) if m is not None]
        res = mean_residual(run, d_max)
        rows.append({"run": run["run"], "kl_coef": run["kl_coef"], "d_max": d_max, "mean_residual": res,
                     "own_residuals": own, "spread": (min(own), max(own)) if own else None,
                     "on_frontier": None if res is None or not own else min(own) <= res <= max(own),
                     "above": None if res is None or not own else res > max(own)})
    return {"alpha": fit.alpha, "beta": fit.beta, "r2": fit.r2, "runs": rows}


SHOWN = ("vanilla-reinforce", "rloo-k-4-no-kl", "reinforcepp")
"""The RL methods notebook 09 draws along their trajectories (the issue's vanilla REINFORCE, RLOO and
REINFORCE++), from the showdown's records."""
FRONTIER = (("rloo-k-4-no-kl", "rloo-k-4-kl"), ("vanilla-reinforce", "vanilla-reinforce-kl"))
"""(without, with) a KL penalty: the showdown's pairs of methods that differ only in it."""


def showdown_runs(showdown: str | Path) -> list[dict]:
    """`rl_runs` of every run (folder `<method>-seed<N>`) in a showdown folder or its record."""
    return rl_runs(sorted(d for d in Path(showdown).iterdir() if d.is_dir() and "-seed" in d.name
                          and ((d / "evals.jsonl").exists() or (d / "evals.jsonl.gz").exists())))


def claims(lab: str | Path, showdown: str | Path) -> list[dict]:
    """Each of `b2b.overopt.CLAIMS` against the lab's records (`lab`: the bon-*, ensemble-* and rl-*
    records) and the showdown's runs (`showdown`): one row per claim with `holds` (True / False, None
    when a record it needs is missing) and `detail`, the numbers behind it, per proxy, seed or run."""
    from b2b.overopt import CLAIMS

    lab = Path(lab)
    text = dict(CLAIMS)
    out = []

    def row(name, holds, detail):
        out.append({"claim": name, "text": text[name], "holds": holds, "detail": detail})

    scale = scale_rows(lab)
    small = scale[0] if scale else None
    if small:
        c = json.loads((lab / f"bon-{small['reward_model']}.json").read_text())["curve"]
        top = next(r for r in c if r["n"] == small["peak_n"])
        gain = (f" (gain over n = 1 {top['gold_gain']:+.2f}, 95% interval {top['gain_lo']:+.2f} to {top['gain_hi']:+.2f})"
                if top.get("gain_lo") is not None else "")
        row("interior_peak", small["peak_n"] > 1 and small["last_gold"] < small["peak_gold"],
            f"{small['pairs']:,} pairs: gold {small['gold_n1']:.2f} at n = 1, peak {small['peak_gold']:.2f} at n = "
            f"{small['peak_n']}{gain}, {small['last_gold']:.2f} at n = {small['last_n']}")
    else:
        row("interior_peak", None, "no best-of-n records")
    rl = showdown_runs(showdown) if Path(showdown).is_dir() else []
    full = lab / "bon-rm-level1.json"
    if rl and full.exists():
        bon = bon_fit(json.loads(full.read_text()))
        cmp = [(r, rl_vs_bon(r, bon)) for r in rl]
        below = sum(v["below"] for _, v in cmp)
        gaps = [v["gap"] for _, v in cmp]
        fails = [v for _, v in cmp if not v["below"]]
        row("rl_below_bon", below == len(cmp),
            f"R_rl(d) <= R_bon(d) at 50 distances from d_max / 50 to d_max (the smaller largest d of the two) in {below} "
            f"of {len(cmp)} runs; mean gap R_rl - R_bon "
            f"{min(gaps):+.2f} to {max(gaps):+.2f} (negative in {sum(g < 0 for g in gaps)} of {len(cmp)})"
            + (f"; where RL's fit is above, it is so only up to d = {max(v['above_up_to'] for v in fails):.2f}, before "
               f"those runs' first measured d ({min(v['first_d'] for v in fails):.2f} or more); from each run's first "
               f"measured d on, below in {sum(v['below_measured'] for _, v in cmp)} of {len(cmp)}" if fails else ""))
    else:
        row("rl_below_bon", None, "no showdown runs or no best-of-n record of the shipped reward model")
    bon_r2 = [r["r2"] for r in scale]
    rl_r2 = [r["r2"] for r in rl]
    row("fits", bool(bon_r2) and bool(rl_r2) and min(bon_r2 + rl_r2) >= 0.9,
        (f"best-of-n R^2 {min(bon_r2):.3f} to {max(bon_r2):.3f} ({len(bon_r2)} proxies); " if bon_r2 else "")
        + (f"RL R^2 {min(rl_r2):.2f} to {max(rl_r2):.2f}, >= 0.9 in {sum(x >= 0.9 for x in rl_r2)} of {len(rl_r2)} runs"
           if rl_r2 else "no RL runs"))
    stars = [r["r_star"] for r in scale]
    rises = len(stars) > 1 and all(a is not None and b is not None and b > a for a, b in zip(stars, stars[1:]))
    row("peak_rises", rises if len(stars) > 1 else None,
        ", ".join(f"{r['pairs']:,}: R* {r['r_star']:+.2f}" if r["r_star"] is not None else f"{r['pairs']:,}: no peak"
                  for r in scale))
    ens = sorted(lab.glob("ensemble-rm-*.json"))
    if ens:
        e = json.loads(ens[0].read_text())
        cv = e["curves"]

        def loss(c):  # gold lost from the curve's own peak by its largest n
            return max(r["gold"] for r in c) - c[-1]["gold"]
        singles = [k for k in cv if k.startswith("seed")]
        worse = [k for k in singles if loss(cv["worst"]) < loss(cv[k])]
        row("worst_case", len(worse) == len(singles),
            f"gold lost from the peak by n = {cv['worst'][-1]['n']}: worst case {loss(cv['worst']):.2f}, mean "
            f"{loss(cv['mean']):.2f}, uncertainty-weighted {loss(cv['uwo']):.2f}; single models "
            + ", ".join(f"{k} {loss(cv[k]):.2f}" for k in singles)
            + f"; the worst case loses less than {len(worse)} of the {len(singles)} single models")
    else:
        row("worst_case", None, "no ensemble record")
    fr = []
    for without, with_ in FRONTIER:
        a, b = [r for r in rl if r["method"] == without], [r for r in rl if r["method"] == with_]
        if a and b:
            fr += kl_frontier(a, b)["runs"]
    if fr:
        on = [r for r in fr if r["on_frontier"]]
        above = [r for r in fr if r["above"]]
        row("kl_frontier", len(on) == len(fr),
            f"within the unpenalised runs' own residuals in {len(on)} of {len(fr)} penalised runs, above all of them "
            f"(more gold at equal d) in {len(above)} of {len(fr)}; mean residuals from the unpenalised fit: "
            + ", ".join(f"{r['run']} {r['mean_residual']:+.2f} (unpenalised {min(r['own_residuals']):+.2f} to "
                        f"{max(r['own_residuals']):+.2f})" for r in fr))
    else:
        row("kl_frontier", None, "no showdown runs with and without the KL penalty")
    def story(ev):
        top = max(ev, key=lambda e: e["gold_mean"])
        fell = next((e["step"] for e in ev if e["step"] > top["step"] and e["gold_mean"] < ev[0]["gold_mean"]), None)
        return (f"{ev[0]['gold_mean']:.2f} -> peak {top['gold_mean']:.2f} (step {top['step']}) -> "
                f"{ev[-1]['gold_mean']:.2f} at step {ev[-1]['step']}"
                + (f", below its start from step {fell}" if fell is not None else ""))

    pair = [rl_run_dir(lab, k, ENSEMBLE_PAIRS) for k in ("single", "worst")]
    if all(p.is_dir() for p in pair):
        evs = [record_evals(p) for p in pair]
        s1, w1 = evs[0][-1]["gold_mean"], evs[1][-1]["gold_mean"]
        row("rl_ensemble", w1 > s1, f"gold against the single model {story(evs[0])}; against the worst-case ensemble "
                                    f"{story(evs[1])} (one seed each; final difference {w1 - s1:+.2f})")
    else:
        row("rl_ensemble", None, "no RL runs against the ensemble")
    pair = [rl_run_dir(lab, k, ENSEMBLE_PAIRS, RL_METHODS["-kl"]) for k in ("single", "worst")]
    if all(p.is_dir() for p in pair):
        evs = [record_evals(p) for p in pair]
        s1, w1 = evs[0][-1]["gold_mean"], evs[1][-1]["gold_mean"]
        row("rl_ensemble_kl", w1 - s1 > 0.1,
            f"with the KL penalty, gold against the single model {story(evs[0])}; against the worst-case ensemble "
            f"{story(evs[1])} (one seed each; final difference {w1 - s1:+.2f}; KL to SFT at the end "
            f"{evs[0][-1]['kl_ref']:.2f} and {evs[1][-1]['kl_ref']:.2f} nats)")
    else:
        row("rl_ensemble_kl", None, "no RL + KL runs against the ensemble")
    return out


def _pairs(name: str) -> int | None:
    """Training pairs of a ladder model from its name ('rm-3000' -> 3000); None for another model."""
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def scale_rows(record_dir: str | Path, full_pairs: int = 100_000) -> list[dict]:
    """One row per best-of-n record in `record_dir` (`bon-*.json`), ordered by the proxy's training
    pairs (the shipped `rm-level1`: `full_pairs`): its peak (n and gold), gold at the largest n, and the
    fit of Gao et al.'s best-of-n law (`bon_fit`): alpha, beta, R^2, d*, R*."""
    rows = []
    for path in sorted(Path(record_dir).glob("bon-*.json")):
        r = json.loads(path.read_text())
        c = r["curve"]
        fit = bon_fit(r)
        peak = max(c, key=lambda x: x["gold"])
        m = r.get("reward_model_metrics", {})
        rows.append({"reward_model": r["reward_model"], "pairs": _pairs(r["reward_model"]) or full_pairs,
                     "pair_accuracy": m.get("pair_accuracy"), "gold_spearman": m.get("gold_spearman"),
                     "gold_n1": c[0]["gold"], "peak_n": peak["n"], "peak_gold": peak["gold"],
                     "peak_lo": peak["gold_lo"], "peak_hi": peak["gold_hi"], "last_n": c[-1]["n"], "last_gold": c[-1]["gold"],
                     **{k: fit[k] for k in ("alpha", "beta", "r2", "d_star", "r_star")}})
    return sorted(rows, key=lambda row: row["pairs"])


def claims_table(rows: list[dict]) -> str:
    """`claims` as a markdown table: the claim as fixed before the lab's runs, its outcome, its numbers."""
    verdict = {True: "holds", False: "**does not hold**", None: "not measured"}
    lines = ["| claim | as fixed before the lab's runs | outcome | the numbers |", "|---|---|---|---|"]
    lines += [f"| `{r['claim']}` | {r['text']} | {verdict[r['holds']]} | {r['detail']} |" for r in rows]
    return "\n".join(lines)


def results_markdown(lab: str | Path, showdown: str | Path) -> str:
    """docs/results.md's over-optimisation section, rendered from the records (`--check` in the tests)."""
    rows = scale_rows(lab)
    lines = ["| proxy's pairs | pair accuracy | Spearman with gold | gold at n = 1 | peak gold (n) | gold at n = 256 | "
             "alpha | beta | R^2 | d* | R* |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["pair_accuracy"] is None else f"{r['pair_accuracy']:.3f}"
        sp = "-" if r["gold_spearman"] is None else f"{r['gold_spearman']:.2f}"
        lines.append(f"| {r['pairs']:,} | {acc} | {sp} | {r['gold_n1']:.2f} | {r['peak_gold']:.2f} ({r['peak_n']}) | "
                     f"{r['last_gold']:.2f} | {r['alpha']:.2f} | {r['beta']:.2f} | {r['r2']:.3f} | "
                     + ("-" if r["d_star"] is None else f"{r['d_star']:.2f}") + " | "
                     + ("-" if r["r_star"] is None else f"{r['r_star']:+.2f}") + " |")
    rl = [r for r in showdown_runs(showdown) if r["method"] in SHOWN] if Path(showdown).is_dir() else []
    fits = ["| RL run | alpha | beta | R^2 | d* (in range) | R* | largest d |", "|---|---|---|---|---|---|---|"]
    for r in rl:
        peak = (f"{r['d_star']:.2f} | {r['r_star']:+.2f}" if r["peak_in_range"] else
                "no peak (beta <= 0) | -" if r["d_star"] is None else "beyond the data | -")
        fits.append(f"| {r['run']} | {r['alpha']:.2f} | {r['beta']:.2f} | {r['r2']:.2f} | {peak} | {max(r['d']):.2f} |")
    ens_lines = []
    for f in sorted(Path(lab).glob("ensemble-rm-*.json")):
        e = json.loads(f.read_text())
        ens_lines += [f"Best-of-n against four reward models on the same {e['pairs']:,} pairs (seeds "
                      f"{', '.join(map(str, e['seeds']))}; `python -m b2b.tools.overopt ensemble`), each alone and combined "
                      f"(standardised on the SFT answers; uncertainty-weighted: mean - {e['lam']:g} x variance):", "",
                      "| picked by | pair accuracy | peak gold (n) | gold at n = 256 | lost from the peak |", "|---|---|---|---|---|"]
        acc = {f"seed{m['seed']}": f"{m['metrics']['pair_accuracy']:.3f}" for m in e["members"]}
        for name, c in e["curves"].items():
            top = max(c, key=lambda r: r["gold"])
            ens_lines.append(f"| {name} | {acc.get(name, '-')} | {top['gold']:.2f} ({top['n']}) | {c[-1]['gold']:.2f} | "
                             f"{top['gold'] - c[-1]['gold']:.2f} |")
        ens_lines.append("")
    return "\n".join(["Best-of-n against level-1 reward models trained on more and more pairs (512 held-out prompts, "
                      "256 answers each; `python -m b2b.tools.overopt table`):", "", *lines, "",
                      "Gao et al.'s RL law fitted to each run of three methods along its held-out evaluations "
                      "(the showdown's records, every 25 steps):", "", *fits, "",
                      *ens_lines, "The claims, fixed before the lab's runs and before notebook 08's records were analysed this "
                      "way (`b2b.overopt.CLAIMS`):", "",
                      claims_table(claims(lab, showdown))])


DOCS_START, DOCS_END = "<!-- overopt:start -->", "<!-- overopt:end -->"


def write_docs(path: str | Path | None = None, check: bool = False) -> int:
    """Rewrite (or with `check`, compare) the section between docs/results.md's overopt markers
    with `results_markdown` of the shipped records; 1 when `check` finds it stale."""
    from b2b.config import data_dir
    from b2b.tools.showdown_docs import replace_section

    path = Path(path) if path else Path(__file__).resolve().parents[2] / "docs" / "results.md"
    text = path.read_text()
    body = results_markdown(data_dir() / "runs" / SHIPPED, data_dir() / "runs" / "showdown-tiny")
    new = replace_section(text, body, str(path), DOCS_START, DOCS_END, "over-optimisation")
    if new == text:
        return 0
    if check:
        print(f"{path}: the over-optimisation section differs from the records (python -m b2b.tools.overopt docs)")
        return 1
    path.write_text(new)
    print(f"{path}: rewritten")
    return 0


SHIPPED = "overopt-tiny"
"""The lab's records under the data directory's `runs/` (best-of-n, the ladder, the ensemble and its RL runs)."""


def run_all(profile, out: str | Path, say=print) -> dict:
    """Every record of the lab in `profile` (the tiny world): best-of-n against the shipped reward
    model, the ladder of proxy sizes, the ensemble, and RL against one member and against the
    ensemble; each stage reads back what `out` already holds. Returns {stage: seconds}."""
    seconds = {}
    for stage, fn in (("best-of-n", lambda: run_bon(profile, out, say=say)),
                      ("ladder", lambda: run_ladder(profile, out, say=say)),
                      ("ensemble", lambda: run_ensemble(profile, out, say=say)),
                      ("RL against the ensemble", lambda: run_rl_ensemble(profile, out, say=say)),
                      ("RL + KL against the ensemble",
                       lambda: run_rl_ensemble(profile, out, method=RL_METHODS["-kl"], say=say))):
        t = time.perf_counter()
        fn()
        seconds[stage] = round(time.perf_counter() - t, 1)
        say(f"overopt: {stage} done in {seconds[stage]:.0f} s")
    return seconds


def lab(retrain: bool = False, out: str | Path = "runs/overopt-retrained", say=print) -> Path:
    """The folder notebook 09 reads: the course's shipped records (`data/runs/overopt-tiny`), or with
    `retrain` all of them produced again in the `tiny` profile into `out` (`run_all`; about 45 minutes
    on 2 cores: best-of-n 5, the ladder 14, the ensemble 12, the four RL runs 14). `out` is not named
    like the shipped folder, so no shipped record is read back in its place."""
    from b2b.config import data_dir, get_profile

    if not retrain:
        return data_dir() / "runs" / SHIPPED
    run_all(get_profile("tiny"), out, say)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    from b2b.config import get_profile

    ap = argparse.ArgumentParser(prog="python -m b2b.tools.overopt", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bon", help="best-of-n against the proxy, scored by gold")
    b.add_argument("--profile", default="tiny")
    b.add_argument("--n", type=int, default=256, help="answers per prompt (the largest n)")
    b.add_argument("--prompts", type=int, default=None, help="held-out prompts (default: the profile's evaluation set)")
    b.add_argument("--reward-model", action="append", default=None, metavar="NAME=PATH",
                   help="a reward model to score with (repeatable; default: the profile's level-1 model)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default="runs/overopt")
    lad = sub.add_parser("ladder", help="reward models on the first N pairs, then best-of-n against each")
    lad.add_argument("--profile", default="tiny")
    lad.add_argument("--pairs", type=int, nargs="+", default=list(LADDER))
    lad.add_argument("--n", type=int, default=256)
    lad.add_argument("--prompts", type=int, default=None)
    lad.add_argument("--seed", type=int, default=0)
    lad.add_argument("--out", default="runs/overopt")
    ens = sub.add_parser("ensemble", help="best-of-n against an ensemble of reward models (mean, worst, uwo)")
    ens.add_argument("--profile", default="tiny")
    ens.add_argument("--pairs", type=int, default=ENSEMBLE_PAIRS)
    ens.add_argument("--seeds", type=int, nargs="+", default=list(ENSEMBLE_SEEDS))
    ens.add_argument("--n", type=int, default=256)
    ens.add_argument("--prompts", type=int, default=None)
    ens.add_argument("--out", default="runs/overopt")
    rl = sub.add_parser("rl", help="RL against the ensemble's first member and against the ensemble")
    rl.add_argument("--profile", default="tiny")
    rl.add_argument("--pairs", type=int, default=ENSEMBLE_PAIRS)
    rl.add_argument("--seeds", type=int, nargs="+", default=list(ENSEMBLE_SEEDS))
    rl.add_argument("--rewards", nargs="+", default=["single", "worst"], choices=["single", "mean", "worst", "uwo"])
    rl.add_argument("--steps", type=int, default=RL_STEPS)
    rl.add_argument("--method", default=RL_METHOD, choices=list(RL_METHODS.values()))
    rl.add_argument("--out", default="runs/overopt")
    dc = sub.add_parser("docs", help="rewrite docs/results.md's over-optimisation section from the shipped records")
    dc.add_argument("--check", action="store_true", help="exit 1 if the section differs from the records")
    al = sub.add_parser("all", help="every record of the lab: best-of-n, the ladder, the ensemble, RL against it")
    al.add_argument("--profile", default="tiny")
    al.add_argument("--out", default="runs/overopt")
    tab = sub.add_parser("table", help="the best-of-n records of a folder, one line per proxy, with the law's fit")
    tab.add_argument("--dir", default="data/runs/overopt-tiny")
    args = ap.parse_args(argv)
    if args.cmd == "table":
        for r in scale_rows(args.dir):
            acc = "" if r["pair_accuracy"] is None else f" (accuracy {r['pair_accuracy']:.3f}, Spearman {r['gold_spearman']:.3f})"
            print(f"{r['pairs']:>7,} pairs{acc}: gold {r['gold_n1']:.2f} at n = 1, peak {r['peak_gold']:.2f} at n = "
                  f"{r['peak_n']} [{r['peak_lo']:.2f}, {r['peak_hi']:.2f}], {r['last_gold']:.2f} at n = {r['last_n']}; "
                  f"fit alpha {r['alpha']:.2f} beta {r['beta']:.2f} R^2 {r['r2']:.3f}, d* "
                  + ("-" if r["d_star"] is None else f"{r['d_star']:.2f}") + ", R* "
                  + ("-" if r["r_star"] is None else f"{r['r_star']:+.2f}"))
        return 0
    if args.cmd == "docs":
        return write_docs(check=args.check)
    if args.cmd == "all":
        print(json.dumps(run_all(get_profile(args.profile), args.out)))
        return 0
    if args.cmd in ("ensemble", "rl") and (len(args.seeds) < 2 or args.pairs < 1):
        ap.error("--seeds needs at least two seeds and --pairs at least 1")
    if args.cmd == "ensemble":
        run_ensemble(get_profile(args.profile), args.out, args.pairs, args.seeds, args.n, args.prompts)
        return 0
    if args.cmd == "rl":
        if args.steps < 1:
            ap.error("--steps must be at least 1")
        run_rl_ensemble(get_profile(args.profile), args.out, args.pairs, args.seeds, args.rewards, args.method,
                        steps=args.steps)
        return 0
    if args.cmd == "ladder":
        if args.n < 1 or min(args.pairs) < 1:
            ap.error("--n and --pairs must be at least 1")
        run_ladder(get_profile(args.profile), args.out, args.pairs, args.n, args.prompts, args.seed)
        return 0
    rms = None
    if args.reward_model:
        bad = [r for r in args.reward_model if "=" not in r]
        if bad:
            ap.error(f"--reward-model {bad[0]!r}: expected NAME=PATH")
        rms = dict(r.split("=", 1) for r in args.reward_model)
    if args.n < 1 or (args.prompts is not None and args.prompts < 1):
        ap.error("--n and --prompts must be at least 1")
    run_bon(get_profile(args.profile), args.out, args.n, args.prompts, rms, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
