"""Every method of the course, side by side, over several seeds (notebook 08, `b2b showdown`).

    rows = run_showdown(profile, seeds=(0, 1, 2))      # one row per (method, seed)
    table = aggregate(rows)                             # mean and spread per method

Each method runs with its notebook's settings and the same number of samples per step and steps
(`b2b.pipeline.rl_config`). Runs are cached: a finished run's `result.json` is reused when its
config matches, and a run killed half way resumes from its last checkpoint, so a long showdown
can be built in several sittings.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

METHODS = {
    "vanilla REINFORCE": ("reinforce", {}),
    "repetition penalty 1.2": ("reinforce", {"repetition_penalty": 1.2}),
    "RLOO k=2 + KL": ("rloo", {"k": 2}),
    "RLOO k=4 + KL": ("rloo", {"k": 4}),
    "REINFORCE++": ("reinforce_pp", {}),
    "REINFORCE++-baseline": ("reinforce_pp_baseline", {}),
}
"""label -> (algo, overrides of the algorithm's notebook settings)."""


def method_config(profile, method: str, seed: int, steps: int | None = None):
    """The RLConfig of one showdown cell: the algorithm's notebook settings, the method's overrides,
    the seed, and one common number of steps (the longest of the methods' defaults unless given)."""
    from b2b.pipeline import rl_config

    algo, over = METHODS[method]
    if steps is None:
        steps = max(rl_config(profile, a).steps for a, _ in METHODS.values())
    return rl_config(profile, algo, **{**over, "seed": seed, "steps": steps})


def _slug(method: str) -> str:
    """A method's directory name: 'RLOO k=4 + KL' -> 'rloo-k-4-kl', 'REINFORCE++' -> 'reinforcepp'."""
    s = "".join(c if c.isalnum() else "-" for c in method.lower().replace("++", "pp")).strip("-")
    while "--" in s:
        s = s.replace("--", "-")
    return s


def same_config(stored: dict | None, want: dict) -> bool:
    """Whether a saved run's config is `want`; a setting the saved run predates counts as its
    default (so adding an RLConfig field does not invalidate finished runs)."""
    from b2b.train import RLConfig

    if not isinstance(stored, dict) or set(stored) - set(want):
        return False
    defaults = dataclasses.asdict(RLConfig())
    return all(stored.get(k, defaults[k]) == v for k, v in want.items())


def run_showdown(profile, seeds=(0, 1, 2), methods=None, out: str | Path = "runs/showdown", steps: int | None = None,
                 progress: bool = True) -> list[dict]:
    """Train every (method, seed) not already done in `out`; return one result row each:
    method, seed, algo, samples, and the held-out `sft`/`final` metrics, `peak_gold_mean`, `kl_ref`."""
    from b2b.models import load_reward_model, load_tokenizer
    from b2b.pipeline import rl_prompts, shipped_reward_model
    from b2b.train import summary

    out = Path(out)
    tok = load_tokenizer(profile.policy)
    rm = load_reward_model(shipped_reward_model(profile, level=1))
    prompts, heldout, world = rl_prompts(profile)
    rows = []
    for method in methods or METHODS:
        for seed in seeds:
            cfg = method_config(profile, method, seed, steps)
            d = out / f"{_slug(method)}-seed{seed}"
            res_file = d / "result.json"
            want = dataclasses.asdict(cfg)
            if res_file.exists():
                row = json.loads(res_file.read_text())
                if same_config(row.get("config"), want):
                    rows.append(row)
                    continue
            t0 = time.time()
            h = cached_run(profile, cfg, d, tok, rm, (prompts, heldout, world), progress)
            s = summary(h)
            row = {"method": method, "seed": seed, "algo": cfg.algo, "samples": cfg.steps * cfg.batch_size,
                   **{k: s[k] for k in ("sft", "final", "peak_gold_mean", "peak_step", "steps", "median_step_s")},
                   "wall_seconds": round(time.time() - t0, 1), "config": want}
            res_file.write_text(json.dumps(row, indent=1))
            rows.append(row)
    return rows


def method_run(profile, method: str, seed: int = 0, out: str | Path = "runs/showdown", steps: int | None = None,
               progress: bool = True):
    """The History of one showdown cell (trained, resumed or loaded from `out`, as `run_showdown`
    does): notebooks 06 and 07 share their runs with notebook 08 this way."""
    return cached_run(profile, method_config(profile, method, seed, steps), Path(out) / f"{_slug(method)}-seed{seed}",
                      progress=progress)


def cached_run(profile, cfg, out: str | Path, tokenizer=None, reward_model=None, data=None,
               progress: bool = True):
    """`b2b.train` of `cfg` into `out`, unless `out` already holds that run (same settings but
    perhaps `steps`): a run that got to step cfg.steps or beyond is read back, not retrained (its
    first cfg.steps steps are exactly the run asked for); a run killed half way, or a shorter one,
    resumes from its last checkpoint and goes on to cfg.steps (the RNG state is checkpointed, so
    this equals one uninterrupted run). Returns the run's History. `data` = `rl_prompts(profile)`."""
    from b2b.models import load_policy, load_reward_model, load_tokenizer
    from b2b.pipeline import rl_prompts, shipped_reward_model
    from b2b.train import History, latest_checkpoint, train

    out = Path(out)
    want = dataclasses.asdict(cfg)
    ck = latest_checkpoint(out) if out.exists() else None
    resume = None
    if ck is not None:
        stored, at = json.loads((ck / "config.json").read_text()), int(ck.name.split("-")[1])
        if same_config({**stored, "steps": cfg.steps}, want):  # the same run, perhaps of another length
            history = History.from_dict(json.loads((ck / "history.json").read_text()))
            if at >= cfg.steps:  # done (or longer): its first cfg.steps steps are this run
                return History(steps=[r for r in history.steps if r["step"] <= cfg.steps],
                               evals=[e for e in history.evals if e["step"] <= cfg.steps],
                               samples=[r for r in history.samples if r["step"] <= cfg.steps])
            resume = out  # killed half way, or shorter: continue it (the same draws as one long run)
    tokenizer = tokenizer or load_tokenizer(profile.policy)
    reward_model = reward_model or load_reward_model(shipped_reward_model(profile, level=1))
    prompts, heldout, world = data or rl_prompts(profile)
    policy = load_policy(profile.policy, trainable=True)
    return train(policy, tokenizer, reward_model, prompts, cfg, eval_prompts=heldout, world=world, out=out,
                 resume=resume, overwrite=True, progress=progress)


def run_policy(profile, out: str | Path, step: int):
    """The policy a run in `out` had after `step` steps, from its checkpoint of that step (a
    `cached_run` that was read back rather than trained returns only the History; this is its
    model). A one-line error names the steps that were kept when that one was not."""
    from safetensors.torch import load_model

    from b2b.models import load_policy
    from b2b.train import _checkpoints

    ck = Path(out) / "checkpoints" / f"step-{step:06d}"
    if not (ck / "policy.safetensors").exists():
        kept = [int(c.name.split("-")[1]) for c in _checkpoints(Path(out))]
        raise FileNotFoundError(f"{out}: no checkpoint of step {step} (kept: {kept or 'none'})")
    policy = load_policy(profile.policy)
    load_model(policy, str(ck / "policy.safetensors"), device=str(next(policy.parameters()).device))
    return policy


def aggregate(rows: list[dict]) -> list[dict]:
    """Per method: mean and standard deviation over seeds of final gold, proxy, KL, distinct-2
    (relative to SFT), and the gold peak."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)

    def ms(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return None, None
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)
    out = []
    for method, rs in by.items():
        row = {"method": method, "seeds": len(rs), "samples": rs[0]["samples"]}
        for key, f in (("gold", lambda r: r["final"].get("gold_mean")),
                       ("gold_gain", lambda r: r["final"].get("gold_mean") - r["sft"].get("gold_mean")),
                       ("peak_gold", lambda r: r["peak_gold_mean"]),
                       ("proxy", lambda r: r["final"].get("proxy_mean")),
                       ("kl", lambda r: r["final"].get("kl_ref")),
                       ("distinct2_ratio", lambda r: r["final"]["distinct_2"] / r["sft"]["distinct_2"]),
                       ("step_s", lambda r: r["median_step_s"])):
            row[key], row[f"{key}_std"] = ms([f(r) for r in rs])
        out.append(row)
    return out


def markdown_table(agg: list[dict], sft_gold: float | None = None) -> str:
    """The README's showdown table: mean ± std over seeds."""
    def pm(r, k, fmt=".2f"):
        return "n/a" if r[k] is None else f"{r[k]:{fmt}} ± {r[k + '_std']:{fmt.lstrip('+')}}"
    head = ("| method | final gold | gold gain vs SFT | peak gold | final proxy | KL to SFT (nats) | "
            "distinct-2 / SFT | step (s) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in agg:
        lines.append(f"| {r['method']} | {pm(r, 'gold')} | {pm(r, 'gold_gain', '+.2f')} | {pm(r, 'peak_gold')} | "
                     f"{pm(r, 'proxy')} | {pm(r, 'kl', '.1f')} | {pm(r, 'distinct2_ratio')} | {r['step_s']:.2f} |")
    return "\n".join(lines)


CLAIMS = (  # (column, threshold, True if the value must be at least the threshold, else at most)
    ("RLOO: gold - SFT", 1.5, True),
    ("RLOO: distinct-2 / SFT", 0.7, True),
    ("RLOO - vanilla: gold", 1.0, True),
    ("REINFORCE++: gold - SFT", 1.5, True),
    ("REINFORCE++ KL / RLOO KL", 1.0, False),
)
"""The course's claims for the showdown (notebook 08), each checked per seed."""


def _meets(value: float, threshold: float, at_least: bool) -> bool:
    return value >= threshold if at_least else value <= threshold


def claims(rows: list[dict]) -> list[dict]:
    """The course's claims, seed by seed, from the showdown's rows (final held-out evaluations,
    each run against its own seed's SFT evaluation and vanilla run): RLOO k=4 + KL gains >= 1.5
    gold over SFT, keeps >= 70% of SFT's distinct-2, ends >= 1.0 above vanilla REINFORCE;
    REINFORCE++ gains >= 1.5 with a KL to SFT no larger than RLOO's. One dict per seed that has
    all three runs: `seed`, each CLAIMS column's value, and `holds` (every claim met)."""
    by = {(r["method"], r["seed"]): r for r in rows}
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        try:
            sft, rloo = by["RLOO k=4 + KL", seed]["sft"], by["RLOO k=4 + KL", seed]["final"]
            vanilla, pp = by["vanilla REINFORCE", seed]["final"], by["REINFORCE++", seed]["final"]
        except KeyError:
            continue
        vals = [rloo["gold_mean"] - sft["gold_mean"], rloo["distinct_2"] / sft["distinct_2"],
                rloo["gold_mean"] - vanilla["gold_mean"], pp["gold_mean"] - sft["gold_mean"],
                pp["kl_ref"] / rloo["kl_ref"]]
        row = {"seed": seed, **{name: v for (name, _, _), v in zip(CLAIMS, vals)}}
        row["holds"] = all(_meets(v, t, at_least) for (_, t, at_least), v in zip(CLAIMS, vals))
        out.append(row)
    return out


def claims_table(checks: list[dict]) -> str:
    """`claims` as Markdown: one row per seed, then the mean; each cell marked when it misses."""
    head = "| seed | " + " | ".join(f"{n} ({'>=' if a else '<='} {t:g})" for n, t, a in CLAIMS) + " |"
    lines = [head, "|" + "---|" * (len(CLAIMS) + 1)]
    rows = checks + ([{"seed": "mean", **{n: statistics.fmean(c[n] for c in checks) for n, _, _ in CLAIMS}}]
                     if len(checks) > 1 else [])
    for c in rows:
        lines.append(f"| {c['seed']} | " + " | ".join(f"{c[n]:.2f}" + ("" if _meets(c[n], t, a) else " (missed)")
                                                   for n, t, a in CLAIMS) + " |")
    return "\n".join(lines)


def plot_showdown(rows: list[dict]):
    """Final held-out gold (left) and proxy reward (right) against KL to SFT: one marker per run,
    a larger one per method at its mean over seeds."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    agg = {a["method"]: a for a in aggregate(rows)}
    plain = [r for r in rows if r.get("config", {}).get("repetition_penalty", 1.0) == 1.0] or rows
    sft = statistics.fmean(r["sft"]["gold_mean"] for r in plain if "gold_mean" in r["sft"])  # sampled plainly
    for i, method in enumerate(agg):
        rs = [r for r in rows if r["method"] == method]
        for ax, key, akey in ((axes[0], "gold_mean", "gold"), (axes[1], "proxy_mean", "proxy")):
            ax.plot([r["final"]["kl_ref"] for r in rs], [r["final"][key] for r in rs], "o", color=f"C{i}", alpha=0.45,
                    ms=5)
            ax.plot([agg[method]["kl"]], [agg[method][akey]], "D", color=f"C{i}", ms=9, label=method)
    axes[0].axhline(sft, color="gray", ls=":", label="SFT policy")
    axes[0].set_title("final gold rating (held-out)", fontsize=10)
    axes[1].set_title("final proxy reward (held-out)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("KL to the SFT policy (nats per answer)")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    n_seeds = len({r["seed"] for r in rows})
    fig.suptitle(f"Every method at the same number of samples: small dots = one seed, diamonds = mean of {n_seeds}")
    fig.tight_layout()
    return fig
