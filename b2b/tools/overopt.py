"""The over-optimisation lab's measurements (notebook 09): best-of-n against a proxy reward model,
scored by the tiny world's gold judge.

    python -m b2b.tools.overopt bon --profile tiny --n 256 --prompts 512 --out runs/overopt
    python -m b2b.tools.overopt ladder --profile tiny --pairs 1000 3000 10000 30000 --out runs/overopt
    python -m b2b.tools.overopt table --dir data/runs/overopt-tiny     # the shipped records, with the law's fit

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
    and a 95% bootstrap interval over prompts (`gold_lo`, `gold_hi`; prompts resampled with
    replacement, the same resamples for every n)."""
    ns = ns or ns_up_to(proxy.shape[1])
    rows = best_of_n_curve(proxy, gold, ns)
    base = rows[0]["gold"] if ns[0] == 1 else best_of_n_curve(proxy, gold, [1])[0]["gold"]
    per_prompt = best_of_n_per_prompt(proxy, gold, ns)[1]  # (P, len(ns)): a resample of prompts only averages rows
    g = torch.Generator().manual_seed(seed)
    P = proxy.shape[0]
    boots = torch.stack([per_prompt[torch.randint(P, (P,), generator=g)].mean(0) for _ in range(n_boot)])
    lo, hi = torch.quantile(boots, 0.025, dim=0).tolist(), torch.quantile(boots, 0.975, dim=0).tolist()
    for r, a, b in zip(rows, lo, hi):
        r.update(gold_gain=r["gold"] - base, gold_lo=a, gold_hi=b)
    return rows


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


def run_bon(profile, out: str | Path, n: int = 256, n_prompts: int | None = None, reward_models: dict | None = None,
            seed: int = 0, say=print) -> dict:
    """Sample (or read back) n answers per held-out prompt from the profile's SFT policy, score them with
    each reward model in `reward_models` ({name: path}; the profile's level-1 model by default) and
    write `bon-<name>.json` per model: the settings, the seconds each stage took and the curve."""
    from b2b.data import heldout_prompts
    from b2b.models import fingerprint, load_policy, load_reward_model, load_tokenizer
    from b2b.reward_models import shipped_reward_model

    if not profile.world:
        raise ValueError(f"overopt: profile {profile.name!r} has no gold judge; best-of-n needs the tiny world")
    out = Path(out)
    prompts = heldout_prompts(profile, n_prompts)
    tok = load_tokenizer(profile.policy)
    samples = load_samples(out)
    seconds = {}
    if samples is None or samples["n"] != n or samples["prompts"] != prompts or samples["seed"] != seed:
        t = time.perf_counter()
        samples = bon_samples(load_policy(profile.policy), tok, prompts, n, seed, profile.max_new_tokens)
        seconds["sample"] = time.perf_counter() - t
        save_samples(samples, out)
        say(f"overopt: {len(prompts)} prompts x {n} answers sampled in {seconds['sample']:.0f} s -> {out}")
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
                  "seed": seed, "seconds": secs, "curve": rows}
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
    the shipped recipe with `limit=N`; saved under `out/rm-<N>`, read back when there), then best-of-n
    against each (`run_bon`, the same cached samples). Each record also keeps the reward model's
    held-out pair accuracy, gold agreement and Spearman with gold, and its training seconds."""
    from b2b.recipes import reward_config
    from b2b.reward_models import reward_stage

    out = Path(out)
    result = {}
    for N in pairs:
        path = out / f"rm-{N}"
        name = f"rm-{N}"
        meta = path / "b2b_ladder.json"
        if not meta.exists():
            cfg = reward_config(profile, 1, limit=N, eval_every=10**9)
            _, _, metrics, history, _ = reward_stage(profile, 1, cfg=cfg, out=path, progress=False)
            meta.write_text(json.dumps({"pairs": N, "steps": len(history), **{k: metrics.get(k) for k in (
                "pair_accuracy", "gold_accuracy", "gold_spearman", "train_seconds")}}))
            say(f"overopt: reward model on {N:,} pairs: accuracy {metrics['pair_accuracy']:.3f}, Spearman with gold "
                f"{metrics.get('gold_spearman', float('nan')):.3f}, {metrics['train_seconds']:.0f} s")
        rec = run_bon(profile, out, n, n_prompts, {name: path}, seed, say)[name]
        rec["reward_model_metrics"] = json.loads(meta.read_text())
        (out / f"bon-{name}.json").write_text(json.dumps(rec, indent=1))
        result[name] = rec
    return result


def _pairs(name: str) -> int | None:
    """Training pairs of a ladder model from its name ('rm-3000' -> 3000); None for another model."""
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def scale_rows(record_dir: str | Path, full_pairs: int = 100_000) -> list[dict]:
    """One row per best-of-n record in `record_dir` (`bon-*.json`), ordered by the proxy's training
    pairs (the shipped `rm-level1`: `full_pairs`): its peak (n and gold), gold at the largest n, and the
    fit of Gao et al.'s best-of-n law (`b2b.overopt.fit_law`): alpha, beta, R^2, d*, R*."""
    from b2b.overopt import fit_law

    rows = []
    for path in sorted(Path(record_dir).glob("bon-*.json")):
        r = json.loads(path.read_text())
        c = r["curve"]
        fit = fit_law("bon", [x["d"] for x in c], [x["gold_gain"] for x in c])
        peak = max(c, key=lambda x: x["gold"])
        m = r.get("reward_model_metrics", {})
        rows.append({"reward_model": r["reward_model"], "pairs": _pairs(r["reward_model"]) or full_pairs,
                     "pair_accuracy": m.get("pair_accuracy"), "gold_spearman": m.get("gold_spearman"),
                     "gold_n1": c[0]["gold"], "peak_n": peak["n"], "peak_gold": peak["gold"],
                     "peak_lo": peak["gold_lo"], "peak_hi": peak["gold_hi"], "last_n": c[-1]["n"], "last_gold": c[-1]["gold"],
                     "alpha": fit.alpha, "beta": fit.beta, "r2": fit.r2, "d_star": fit.d_star, "r_star": fit.r_star})
    return sorted(rows, key=lambda row: row["pairs"])


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
