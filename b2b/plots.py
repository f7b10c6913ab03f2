"""Plots the notebooks and the README show (figures made by code, never by hand)."""
from __future__ import annotations

import random
import statistics

import matplotlib.pyplot as plt

from b2b.gold import annotator_rating, judge, words
from b2b.world import FAMILIES, World, sample_style


def annotator_bias_data(world: World, n: int = 2000, seed: int = 0) -> list[dict]:
    """Pool-style responses to test prompts with their gold and (noise-free) annotator ratings."""
    rng = random.Random(f"bias-{seed}")
    by_family = {f: [s for s in world.split["test"] if s.family == f] for f in FAMILIES}
    rows = []
    for _ in range(n):
        spec = rng.choice(by_family[rng.choice(FAMILIES)])
        text = world.respond(spec, rng, sample_style(rng, "pool"))
        j = judge(spec, text)
        rows.append({"gold": j.rating, "annotator": annotator_rating(spec, text, None),
                     "filler": j.n_filler, "words": len(words(text))})
    return rows


def _means_by(rows: list[dict], key, bins) -> tuple[list, list, list]:
    xs, gold, annot = [], [], []
    for label, test in bins:
        sel = [r for r in rows if test(r[key])]
        if len(sel) >= 10:
            xs.append(label)
            gold.append(statistics.fmean(r["gold"] for r in sel))
            annot.append(statistics.fmean(r["annotator"] for r in sel))
    return xs, gold, annot


def plot_annotator_bias(rows: list[dict]):
    """Mean gold vs mean annotator rating by number of filler phrases and by length."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    panels = [("filler", [(str(k), (lambda v, k=k: v == k)) for k in range(5)], "enthusiastic phrases in the response"),
              ("words", [(f"{lo}-{lo + 9}", (lambda v, lo=lo: lo <= v < lo + 10)) for lo in range(0, 60, 10)],
               "response length (words)")]
    for ax, (key, bins, xlabel) in zip(axes, panels):
        xs, gold, annot = _means_by(rows, key, bins)
        ax.plot(xs, gold, "o-", label="gold judge")
        ax.plot(xs, annot, "s--", label="annotators (noise-free)")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean rating (1-10)")
    axes[0].legend()
    fig.suptitle("Annotators like what the gold judge penalises")
    fig.tight_layout()
    return fig


def plot_temperature_sweep(results: list[dict]):
    """Gold mean, end-of-turn rate, distinct-2 and length against sampling temperature."""
    temps = [r["temperature"] for r in results]
    keys = [k for k in ("gold_mean", "eos_rate", "distinct_2", "mean_length") if k in results[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0))
    for ax, k in zip(axes, keys):
        ax.plot(temps, [r[k] for r in results], "o-")
        if k == "distinct_2" and "reference_distinct_2" in results[0]:
            ax.axhline(results[0]["reference_distinct_2"], ls=":", c="gray", label="the data's own")
            ax.legend()
        ax.set_xlabel("temperature")
        ax.set_title(k)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_readme_figures(out: str = "img", n_prompts: int = 256) -> list[str]:
    """The README's figures of the tiny world, from scratch: `b2b figures`."""
    from pathlib import Path

    from b2b.config import get_profile
    from b2b.data import heldout_prompts
    from b2b.evaluate import evaluate_policy
    from b2b.models import load_policy, load_tokenizer

    Path(out).mkdir(parents=True, exist_ok=True)
    paths = [f"{out}/annotator_bias.png", f"{out}/temperature_sweep.png"]
    plot_annotator_bias(annotator_bias_data(World(), 2000)).savefig(paths[0], dpi=110)
    profile = get_profile("tiny")
    tok, policy = load_tokenizer(profile.policy), load_policy(profile.policy)
    prompts = heldout_prompts(profile, n_prompts)
    sweep = [dict(temperature=t, **evaluate_policy(policy, tok, prompts, temperature=t))
             for t in (0.3, 0.7, 1.0, 1.3, 1.6)]
    plot_temperature_sweep(sweep).savefig(paths[1], dpi=110)
    plt.close("all")
    return paths
