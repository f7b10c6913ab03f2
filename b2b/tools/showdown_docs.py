"""Write the showdown's section of the README and of docs/results.md from the shipped records.

    python -m b2b.tools.showdown_docs                  # rewrites both sections in place
    python -m b2b.tools.showdown_docs --check          # exit 1 if either differs from what it would write

The tables are `b2b showdown --no-train --profile tiny`'s (`markdown_table`, `claims_table`) and
every figure in the prose around them is computed here from the same rows, so the documents say
what the records hold and nothing else. Each section sits between `<!-- showdown:start -->` and
`<!-- showdown:end -->` markers.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- showdown:start -->", "<!-- showdown:end -->"
BUDGET = ("Every method of the course with its notebook's settings and the same budget: 600 steps x 64 rollouts "
          "(38,400 samples) per run, seeds 0, 1 and 2, the shipped two-pass Bradley-Terry reward model, `tiny` "
          "profile (mean ± standard deviation over the seeds each row has")
"""The opening both showdown sections share (the README's and docs/results.md's)."""
TWO_BY_TWO = ("vanilla REINFORCE", "vanilla REINFORCE + KL", "RLOO k=4, no KL", "RLOO k=4 + KL")


def shipped_rows(out: Path | None = None) -> list[dict]:
    """The showdown rows of the course's shipped records (`tiny`, seeds 0-2), nothing trained."""
    from b2b.config import get_profile
    from b2b.tools.showdown import run_showdown

    out = out or Path(tempfile.mkdtemp(prefix="b2b-showdown-docs-")) / "runs" / "showdown-tiny"
    return run_showdown(get_profile("tiny"), seeds=(0, 1, 2), out=out, progress=False, train_missing=False)


def _rng(xs, fmt):
    lo, hi = min(xs), max(xs)
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}} to {hi:{fmt}}"


def facts(rows: list[dict]) -> dict:
    """The figures the prose states, from the rows."""
    from b2b.tools.showdown import CLAIMS, METHODS, meets, aggregate, claims

    agg = {a["method"]: a for a in aggregate(rows)}
    sft = rows[0]["sft_pooled"]
    ev = lambda r: r["final_pooled"]  # noqa: E731
    van = sorted((r for r in rows if r["method"] == "vanilla REINFORCE"), key=lambda r: r["seed"])
    kl_runs = [r for r in rows if r["config"]["kl_coef"] > 0]
    checks = claims(rows)
    summed = [a for a in agg.values() if a["updates"] == 1]
    clipped = [a for a in agg.values() if a["updates"] > 1]
    return {
        "agg": agg, "sft": sft, "checks": checks, "claims": CLAIMS, "meets": meets,
        "absent": [m for m in METHODS if m not in agg],
        "partial": [f"{m} ({a['seeds']})" for m, a in agg.items() if a["seeds"] < 3],
        "vanilla": [(r["seed"], ev(r)["gold_mean"], ev(r)["kl_ref"], ev(r)["distinct_2"] / sft["distinct_2"]) for r in van],
        "vanilla_collapsed": sum(ev(r)["distinct_2"] < 0.3 * sft["distinct_2"] and ev(r)["gold_mean"] < sft["gold_mean"]
                                 for r in van),
        "kl_methods": len({r["method"] for r in kl_runs}), "kl_runs": len(kl_runs),
        "kl_gain": _rng([ev(r)["gold_mean"] - sft["gold_mean"] for r in kl_runs], "+.2f"),
        "kl_kl": _rng([ev(r)["kl_ref"] for r in kl_runs], ".1f"),
        "kl_d2": _rng([ev(r)["distinct_2"] / sft["distinct_2"] for r in kl_runs], ".0%"),
        "summed_norm": _rng([a["grad_norm_median"] for a in summed], ".0f"),
        "summed_clip": _rng([a["clipped_share"] for a in summed], ".0%"),
        "clipped_norm": _rng([a["grad_norm_median"] for a in clipped], ".2f"),
        "clipped_clip": _rng([a["clipped_share"] for a in clipped], ".0%"),
        "clipped_updates": _rng([a["updates"] for a in clipped], "g"),
        "lrs": sorted({r["config"]["lr"] for r in rows}),
        "held": [c["seed"] for c in checks if c["holds"]],
        "missed": [(c["seed"], [n for n, t, a in CLAIMS if c[n] is not None and not meets(c[n], t, a)])
                   for c in checks if not c["holds"]],
        "incomplete": [c["seed"] for c in checks if not c["complete"]],
    }


def _two_by_two(f) -> str:
    agg = f["agg"]
    if not all(m in agg for m in TWO_BY_TWO):
        return ""
    g = {m: agg[m]["gold_pooled"] for m in TWO_BY_TWO}
    k = {m: agg[m]["kl_pooled"] for m in TWO_BY_TWO}
    seeds = ", ".join(f"{m} {agg[m]['seeds']}" for m in TWO_BY_TWO)
    return (f"**Baseline or KL?** The 2 x 2 (pooled final gold, mean over each cell's seeds: {seeds}): the KL penalty "
            f"alone takes vanilla REINFORCE from {g[TWO_BY_TWO[0]]:.2f} to {g[TWO_BY_TWO[1]]:.2f} (KL {k[TWO_BY_TWO[0]]:.1f} -> "
            f"{k[TWO_BY_TWO[1]]:.1f} nats); the leave-one-out baseline alone, to {g[TWO_BY_TWO[2]]:.2f} (KL "
            f"{k[TWO_BY_TWO[2]]:.1f}); both, {g[TWO_BY_TWO[3]]:.2f} (KL {k[TWO_BY_TWO[3]]:.1f}).")


def _claims_line(f) -> str:
    n = len(f["checks"])
    line = f"The claims hold on {len(f['held'])} of {n} seeds"
    if f["missed"]:
        line += " (missed: " + "; ".join(f"seed {s}: {', '.join(ms)}" for s, ms in f["missed"]) + ")"
    if f["incomplete"]:
        line += (f"; REINFORCE++'s two are n/a on seed{'s' if len(f['incomplete']) > 1 else ''} "
                 f"{', '.join(map(str, f['incomplete']))}, which has no REINFORCE++ record")
    return line + "."


def common(f) -> list[str]:
    """The paragraphs both documents share, under the table."""
    sft = f["sft"]
    van = "; ".join(f"seed {s}: {g:.2f}, KL {k:.0f} nats, distinct-2 {d:.0%} of SFT's" for s, g, k, d in f["vanilla"])
    rp = f["agg"].get("repetition penalty 1.2")
    paras = [
        f"The lesson in one picture: the proxy reward is not the goal. Without an anchor to the SFT policy, vanilla "
        f"REINFORCE drives the proxy up while gold peaks and falls: it collapses on {f['vanilla_collapsed']} of "
        f"{len(f['vanilla'])} seeds within the 600 steps (pooled final gold {van}). "
        + (f"The sampling-time repetition penalty ends below SFT too (pooled final gold {rp['gold_pooled']:.2f}, "
           f"{rp['seeds']} seed{'s' if rp['seeds'] > 1 else ''}). " if rp else "")
        + f"With a KL penalty every run ({f['kl_methods']} methods, {f['kl_runs']} runs) ends {f['kl_gain']} "
        f"gold above SFT (pooled: {sft['gold_mean']:.2f} over {sft['n']:,} answers), at {f['kl_kl']} nats per answer, "
        f"keeping {f['kl_d2']} of SFT's distinct-2.",
        f"**Read the table at equal samples, not equal step size.** REINFORCE and RLOO sum their loss over each "
        f"answer's tokens: their median gradient norm is {f['summed_norm']}, so with `max_grad_norm` 1 {f['summed_clip']} "
        f"of their updates are clipped: every gradient reaches AdamW rescaled to norm 1, whatever the estimator did to its "
        f"size. REINFORCE++, its baseline variant, GRPO and Dr. GRPO average over tokens "
        f"(median norms {f['clipped_norm']}, {f['clipped_clip']} of updates clipped) and take {f['clipped_updates']} "
        f"updates per batch. " + (f"Every run here has the same learning rate, {f['lrs'][0]:g}; " if len(f["lrs"]) == 1 else
                                  "Each method keeps its notebook's learning rate; ")
        + "the effective step sizes were not matched, "
        "so a gap between the two families is the method and its step size together (notebooks 06-08 say so where "
        "they read these runs).",
    ]
    two = _two_by_two(f)
    if two:
        paras.append(two)
    paras.append(_claims_line(f) + " The claims, fixed before the runs that test them: on every seed RLOO k=4 "
                 "gains at least 1.5 gold over SFT, keeps at least 70% of SFT's distinct-2, ends with at least vanilla "
                 "REINFORCE's gold and at most a fifth of its KL; REINFORCE++ gains at least 1.5 with a KL no larger "
                 "than RLOO's. (The older claim, RLOO at least 1.0 gold above vanilla, is retired.)")
    if f["partial"] or f["absent"]:
        paras.append("Not every row has three seeds: " + ", ".join(f["partial"])
                     + (f"; {', '.join(f['absent'])} {'has' if len(f['absent']) == 1 else 'have'} no shipped run" if f["absent"] else "")
                     + ". `b2b showdown --profile tiny --out notebooks/runs/showdown-tiny` trains the missing cells "
                       "(10 to 25 minutes each on 2 cores: REINFORCE++-baseline's 600 steps at about 1.8 s, the others "
                       "at about 1 s).")
    return paras


def readme_section(rows: list[dict]) -> str:
    from b2b.tools.showdown import aggregate, markdown_table

    f = facts(rows)
    head = (BUDGET + "). \"final gold\" is the run's own last "
            "held-out evaluation (512 prompts); the pooled columns, KL and distinct-2 evaluate each final policy four "
            f"times (2,048 answers) against the SFT policy's sixteen ({f['sft']['n']:,} answers: gold "
            f"{f['sft']['gold_mean']:.2f} ± {f['sft']['gold_se']:.2f}); \"updates / batch\" counts optimizer steps per "
            "rollout batch, \"clipped updates\" the share of them whose gradient norm was above `max_grad_norm`; step "
            "time is the median on a 2-core machine with two runs sharing it. The table is `b2b showdown --no-train "
            "--profile tiny --out notebooks/runs/showdown-tiny` on the shipped records:")
    tail = ("The claims seed by seed, gold by prompt family, the TRL cross-check and the commands that reproduce every "
            "figure are in [docs/results.md](docs/results.md#the-showdown-notebook-08).")
    return "\n\n".join([head, markdown_table(aggregate(rows)), "![showdown](img/showdown.png)", *common(f), tail])


def results_section(rows: list[dict]) -> str:
    from b2b.tools.showdown import aggregate, claims, claims_table, markdown_table

    f = facts(rows)
    head = (BUDGET + "; the repetition-penalty runs are "
            "evaluated with their penalty, as the seed deployed them; step time is the median on this 2-core machine "
            "with two runs sharing it).\n\n"
            "One held-out evaluation (512 prompts, one answer each) moves by about ±0.2 gold from one sampling seed to "
            "the next, as much as the margins the claims are about, so each final policy is also evaluated four times "
            "(2,048 answers) and the SFT policy sixteen times "
            f"({f['sft']['n']:,} answers: gold {f['sft']['gold_mean']:.2f} ± {f['sft']['gold_se']:.2f}), with the same "
            "fixed sampling seeds for every policy (`b2b.tools.showdown.pooled_evaluation`). \"final gold\" is the run's own "
            "last evaluation; the pooled columns, KL and distinct-2 come from the pooled evaluations:")
    claims_head = ("The course's claims, seed by seed, on the pooled evaluations (each final policy against the SFT "
                   "policy's pooled evaluation; `b2b.tools.showdown.claims`):")
    earlier = ("An earlier set of these runs, made with the code of a few versions ago and not kept, had vanilla "
               "REINFORCE collapse on seed 0 only by step 600 and drift on seeds 1 and 2; today's runs of the same "
               "recipe, the ones shipped, collapse on every seed (notebook 04 draws each seed's curves).")
    repro = ("Reproduce (finished runs of the same settings and reward model are read back, killed ones resume; about "
             "10 to 25 minutes per run here, two at a time with `OMP_NUM_THREADS=1`, the pooled evaluations included; "
             "`--json` prints every figure above as one JSON line; this section and the README's are written by "
             "`python -m b2b.tools.showdown_docs` from the shipped records):\n\n"
             "```bash\n"
             "b2b showdown --seeds 0 1 2 --profile tiny --out notebooks/runs/showdown-tiny --img img/showdown.png\n"
             "b2b showdown --seeds 0 1 2 --profile tiny --out notebooks/runs/showdown-tiny --no-train   # the records only\n"
             "```")
    return "\n\n".join([head, markdown_table(aggregate(rows)), "![showdown](../img/showdown.png)", claims_head,
                        claims_table(claims(rows)), *common(f), families(rows), earlier, repro])


def families(rows: list[dict], method: str = "RLOO k=4 + KL") -> str:
    """Where one method's gold came from: its mean gain over SFT per prompt family (pooled evaluations)."""
    runs = [r for r in rows if r["method"] == method and "gold_by_family" in r.get("final_pooled", {})]
    if not runs:
        return ""
    sft = runs[0]["sft_pooled"]["gold_by_family"]
    gain = {fam: statistics.fmean(r["final_pooled"]["gold_by_family"][fam] for r in runs) - g for fam, g in sft.items()}
    order = sorted(gain, key=gain.get, reverse=True)
    return (f"Where the gold came from (the pooled evaluations' `gold_by_family`, {method}, mean of {len(runs)} seeds): "
            + ", ".join(f"{fam} {gain[fam]:+.1f}" for fam in order) + " over SFT. `b2b.reward_eval.spearman_by_family` (the reward model's rank correlation with gold per family, "
            "above) says where the reward model ranks answers well: RL gains least where it ranks worst, since the reward "
            "model, not the estimator, sets the ceiling.")


def replace_section(text: str, body: str, name: str, start: str = START, end: str = END,
                    what: str = "showdown") -> str:
    """`text` with `body` between its `start` and `end` markers (a one-line exit naming the file `name`
    when they are missing)."""
    if start not in text or end not in text:
        raise SystemExit(f"{name}: no {start} ... {end} markers around the {what} section")
    a, rest = text.split(start, 1)
    _, b = rest.split(end, 1)
    return f"{a}{start}\n{body}\n{end}{b}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m b2b.tools.showdown_docs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a document differs from what would be written")
    args = ap.parse_args(argv)
    rows = shipped_rows()
    stale = []
    for path, body in ((ROOT / "README.md", readme_section(rows)), (ROOT / "docs" / "results.md", results_section(rows))):
        old = path.read_text()
        new = replace_section(old, body, str(path))
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    for p in stale:
        print(f"{p}: {'differs from the records' if args.check else 'rewritten'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
