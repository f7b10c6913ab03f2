"""Plots the notebooks and the docs show (figures made by code, never by hand)."""
from __future__ import annotations

import math
import random
import statistics

import matplotlib.pyplot as plt

from b2b.tinyworld.gold import annotator_rating, judge, words
from b2b.tinyworld.world import FAMILIES, World, sample_style


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
    """The figures of the tiny world in img/ (README and docs), from scratch: `b2b figures`."""
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


def _smooth(xs: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x - (xs[i - window] if i >= window else 0.0)
        out.append(acc / min(i + 1, window))
    return out


def plot_reward_training(history: list[dict], window: int = 25, title: str = "reward-model training"):
    """Loss and pair accuracy per step (moving average over `window` steps), held-out accuracy."""
    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].plot(steps, _smooth([r["loss"] for r in history], window))
    axes[0].set_title("loss (moving average)")
    axes[1].plot(steps, _smooth([r["accuracy"] for r in history], window), label="training batches")
    ev = [(r["step"], r["eval_accuracy"]) for r in history if "eval_accuracy" in r]
    if ev:
        axes[1].plot(*zip(*ev), "o-", label="held-out pairs")
    axes[1].set_title("pair accuracy")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_reward_vs_gold(models: dict[str, list[dict]], ylabel: str = "mean reward"):
    """Mean reward by gold-rating bin (one line per model, from `gold_probe` rows), with the
    standard errors: a good reward model rises from left to right."""
    from b2b.reward_eval import binned_means

    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], models.items()):
        bins = binned_means(rows)
        xs, ys, errs = [lo + 0.5 for lo, _, _ in bins], [m for _, m, _ in bins], [e for _, _, e in bins]
        ax.scatter([r["gold"] for r in rows], [r["reward"] for r in rows], s=6, alpha=0.25, c="gray")
        ax.errorbar(xs, ys, yerr=errs, fmt="o-", capsize=3, c="C0")
        ax.set_xlabel("gold rating of the response")
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_bias_probe(probes: dict[str, list[dict]], reward_std: dict[str, float], gold_std: float):
    """What appending filler or padding to an expert answer does to each reward model and to gold,
    in standard deviations (over SFT samples) so different reward scales compare."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ax, kind, label in zip(axes, ("filler", "padding"), ("enthusiastic phrases appended",
                                                             "irrelevant sentences appended")):
        first = next(iter(probes.values()))
        ks = [0] + [r["added"] for r in first if r["kind"] == kind]
        gold = [0.0] + [r["gold_delta"] / gold_std for r in first if r["kind"] == kind]
        ax.plot(ks, gold, "k^--", label="gold judge")
        for i, (name, rows) in enumerate(probes.items()):
            ys = [0.0] + [r["reward_delta"] / reward_std[name] for r in rows if r["kind"] == kind]
            ax.plot(ks, ys, "o-", c=f"C{i}", label=name)
        ax.axhline(0, c="gray", lw=0.8)
        ax.set_xlabel(label)
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("change vs the plain answer (std)")
    axes[0].legend()
    fig.suptitle("Bias probe: an expert answer, with enthusiastic phrases or irrelevant sentences appended")
    fig.tight_layout()
    return fig


def plot_class_distributions(probs, titles: list[str], ncols: int = 4):
    """Bar chart of an ordinal reward model's ten-class distribution for each response."""
    n = len(titles)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.6 * nrows), sharey=True, squeeze=False)
    for ax, p, t in zip(axes.flat, probs, titles):
        p = [float(x) for x in p]
        ax.bar(range(1, len(p) + 1), p, color="C0")
        mean = sum((k + 1) * x for k, x in enumerate(p))
        ax.axvline(mean, c="C3", ls="--", lw=1)
        ax.set_title(t, fontsize=8.5)
        ax.set_xticks(range(1, len(p) + 1))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("class (red line: expected class, the reward)")
    fig.tight_layout()
    return fig


def plot_calibration(models: dict[str, list[dict]]):
    """Reliability diagram: predicted probability that the chosen response wins vs how often it
    did, on held-out pairs (rows from `b2b.metrics.calibration`)."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], c="gray", ls=":", label="perfect calibration")
    for name, rows in models.items():
        ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], "o-", label=name)
    ax.set_xlabel("predicted P(chosen wins)")
    ax.set_ylabel("observed frequency")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _no_gold(ax) -> None:
    """An empty gold panel says why, rather than showing blank axes."""
    ax.text(0.5, 0.5, "no gold judge here\n(the tiny world's prompts only)", ha="center", va="center",
            transform=ax.transAxes, color="gray")


def plot_rl_run(history, window: int = 10, title: str = "REINFORCE", extra=None):
    """A run at a glance: proxy reward, gold and the KL to the SFT policy (top), completion length,
    policy entropy and distinct-2 (bottom); training batches smoothed as lines, held-out
    evaluations as dots. `extra`: more runs to overlay, {label: history}."""
    runs = {title: history, **(extra or {})}
    fig, axes = plt.subplots(2, 3, figsize=(14, 6.4))
    panels = [(axes[0, 0], "reward/proxy_mean", "proxy_mean", "proxy reward (reward model)"),
              (axes[0, 1], "reward/gold_mean", "gold_mean", "gold rating (tiny world's judge)"),
              (axes[0, 2], "kl/ref", "kl_ref", "KL to the SFT policy (nats per answer)"),
              (axes[1, 0], "completions/mean_length", "mean_length", "completion length (tokens)"),
              (axes[1, 1], "policy/entropy", None, "policy entropy (nats per token)"),
              (axes[1, 2], "completions/distinct_2", "distinct_2", "distinct-2 (diversity)")]
    for i, (label, h) in enumerate(runs.items()):
        color = f"C{i}"
        for ax, key, ekey, name in panels:
            steps, ys = h.series(key)
            if ys:
                ax.plot(steps, _smooth(ys, window), color=color, label=label)
            if ekey:
                es, ev = h.series(ekey, "evals")
                if ev:
                    ax.plot(es, ev, "o", color=color, ms=4, label=f"{label}: held-out" if ax is axes[0, 0] else None)
            ax.set_title(name, fontsize=10)
            ax.grid(alpha=0.3)
    if not any(h.series("reward/gold_mean")[1] or h.series("gold_mean", "evals")[1] for h in runs.values()):
        _no_gold(axes[0, 1])
    kl_max = max([abs(v) for h in runs.values() for v in h.series("kl_ref", "evals")[1] + h.series("kl/ref")[1]] or [0])
    if kl_max > 20:  # a run far from SFT would flatten the others' KL into the axis
        axes[0, 2].set_yscale("symlog", linthresh=1.0)
        axes[0, 2].set_title("KL to the SFT policy (nats per answer, log scale past 1)", fontsize=10)
    for ax in axes[1]:
        ax.set_xlabel("RL step")
    handles, labels = axes[0, 0].get_legend_handles_labels()  # below the panels: a legend inside one covers data
    fig.legend(handles, labels, loc="lower center", ncols=len(runs), fontsize=8, frameon=False)
    named = title if len(runs) == 1 else " vs ".join(runs)  # every run drawn, not only the first
    fig.suptitle(f"{named}: lines = training batches (smoothed over {window} steps), dots = held-out evaluations")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def sample_stats(history) -> list[dict]:
    """Per logged step: mean filler phrases, words, repeated-sentence count and gold of the logged
    samples (what the policy's answers are made of, as the run goes on), as the gold judge reads
    them. Samples of prompts outside the tiny world are read from their text alone: the tiny
    world's filler phrases, all words, repeated sentences, and no gold."""
    from b2b.tinyworld.gold import FILLER_SET, sentences

    by_step: dict[int, list] = {}
    for s in history.samples:
        by_step.setdefault(s["step"], []).append(s)
    out = []
    for k, ss in sorted(by_step.items()):
        if all("gold" in s for s in ss):  # a tiny-world run: the judge's own counts
            js = [judge(s["prompt"], s["response"]) for s in ss]
            out.append({"step": k, "filler": statistics.fmean(j.n_filler for j in js),
                        "words": statistics.fmean(len(words(s["response"])) for s in ss),  # filler's words too
                        "repeated sentences": statistics.fmean(j.repeated_sentences for j in js),
                        "gold": statistics.fmean(j.rating for j in js)})
            continue
        sents = [sentences(s["response"]) for s in ss]
        out.append({"step": k, "filler": statistics.fmean(sum(x in FILLER_SET for x in xs) for xs in sents),
                    "words": statistics.fmean(len(words(s["response"])) for s in ss),
                    "repeated sentences": statistics.fmean(len(xs) - len(set(xs)) for xs in sents)})
    return out


def plot_sample_stats(history, window: int = 5):
    """What the logged samples contain over a run: filler phrases, length, repeated sentences."""
    rows = sample_stats(history)
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("filler", "words", "repeated sentences")):
        ax.plot(steps, _smooth([r[key] for r in rows], window))
        ax.set_title(f"{key} per answer (logged samples)", fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_kl_frontier(runs: dict, points: dict | None = None, log: bool | None = None):
    """Held-out gold and proxy reward against the KL to the SFT policy (`kl_ref`), one line per run
    through its periodic evaluations (step 0 at KL = 0; the last one marked). `points`: extra
    single results {label: (kl, gold, proxy)}, e.g. a method's mean over seeds. `log`: a symlog KL
    axis (linear up to 1 nat); None: when one run ends more than ten times further out than another."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, h) in enumerate(runs.items()):
        ev = [e for e in h.evals if "kl_ref" in e]
        kl = [e["kl_ref"] for e in ev]
        for ax, key in zip(axes, ("gold_mean", "proxy_mean")):
            if not ev or key not in ev[0]:
                continue
            ys = [e[key] for e in ev]
            ax.plot(kl, ys, "-", color=f"C{i}", alpha=0.6, label=label)
            ax.plot(kl[-1:], ys[-1:], "o", color=f"C{i}", ms=7)
    for j, (label, (kl, gold, proxy)) in enumerate((points or {}).items()):
        for ax, y in zip(axes, (gold, proxy)):
            if y is not None:
                ax.plot([kl], [y], "*", ms=12, color=f"C{len(runs) + j}", label=label)
    if not axes[0].lines:
        _no_gold(axes[0])
    ends = [abs(h.evals[-1]["kl_ref"]) for h in runs.values() if h.evals and "kl_ref" in h.evals[-1]]
    if log is None:
        log = bool(ends) and max(ends) > 10 * max(min(ends), 0.1)
    if log:
        for ax in axes:
            ax.set_xscale("symlog", linthresh=1.0)
    axes[0].set_title("gold rating (tiny world's judge)", fontsize=10)
    axes[1].set_title("proxy reward (reward model)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("KL to the SFT policy (nats per answer, held-out" + (", log scale past 1)" if log else ")"))
        ax.grid(alpha=0.3)
    (axes[0] if axes[0].lines else axes[1]).legend(fontsize=8)
    fig.suptitle("Reward vs KL: each line one run's held-out evaluations, the dot its end")
    fig.tight_layout()
    return fig


def plot_rlhf_loop():
    """The course in one picture: demonstrations -> SFT policy; preference pairs -> reward model;
    then the RL loop (the policy samples, the reward model scores, a policy-gradient step), with
    the frozen SFT policy as the KL reference and the tiny world's gold judge watching from outside."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 4.2))
    ax.set_xlim(0, 11.6)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    boxes = {
        "demos": (0.1, 3.0, "demonstrations\n(data/sft.jsonl)", "0.9"),
        "sft": (3.0, 3.0, "SFT policy\n(stage 1: given)", "#cfe2f3"),
        "pairs": (0.1, 0.6, "preference pairs\n(annotators' choices)", "0.9"),
        "rm": (3.0, 0.6, "reward model\n(stage 2: notebooks 01-02)", "#fce5cd"),
        "policy": (5.9, 3.0, "policy being trained\n(stage 3: notebooks 03-08)", "#d9ead3"),
        "score": (5.9, 0.6, "its answers, scored:\nproxy reward r(x, y)", "#fff2cc"),
        "gold": (8.8, 0.6, "gold judge\n(tiny world only: never\nseen by training)", "#f4cccc"),
        "ref": (8.8, 3.0, "frozen SFT policy\n(the KL reference,\nnotebooks 06-08)", "#cfe2f3"),
    }
    w, h = 2.0, 0.95
    for x, y, text, color in boxes.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="0.3"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    def arrow(a, b, label="", side=(0, 0), rad=0.0, style="-|>", color="0.2", at=(0.0, 0.12), ha="center"):
        (xa, ya, *_), (xb, yb, *_) = boxes[a], boxes[b]
        start = (xa + w / 2 + side[0] * w / 2, ya + h / 2 + side[1] * h / 2)
        end = (xb + w / 2 - side[0] * w / 2, yb + h / 2 - side[1] * h / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color,
                                     connectionstyle=f"arc3,rad={rad}", lw=1.3))
        if label:
            ax.text((start[0] + end[0]) / 2 + at[0], (start[1] + end[1]) / 2 + at[1], label, ha=ha, va="bottom",
                    fontsize=8, color=color)
    arrow("demos", "sft", "supervised\nfine-tuning", side=(1, 0))
    arrow("pairs", "rm", "Bradley-Terry /\nordinal loss", side=(1, 0))
    arrow("sft", "policy", "a copy of it", side=(1, 0))
    arrow("policy", "score", "1. sample\nanswers", side=(0, -1), rad=0.3, at=(-0.3, -0.2), ha="right")
    arrow("rm", "score", "2. score", side=(1, 0))
    arrow("score", "policy", "3. policy-gradient step\n(REINFORCE, RLOO, ...)", side=(0, 1), rad=0.3, color="C2",
          at=(0.3, -0.2), ha="left")
    arrow("ref", "policy", "KL\npenalty", side=(-1, 0), color="C0")
    arrow("score", "gold", "rates the\nsame answers", side=(1, 0), color="C3")
    ax.set_title("RLHF as this course builds it: stages 2 and 3 on a given SFT policy (stage 1)", fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- diagrams (notebooks 06-07)

def plot_rloo_group(groups: dict[str, list[float]] | None = None):
    """RLOO's leave-one-out baseline, drawn: for each group of k answers to one prompt, each answer's
    reward (bar), the mean of the *other* k - 1 rewards (its baseline, a black tick) and the advantage
    between them (arrow, `b2b.advantages.rloo_advantages`). The dotted line is the whole group's mean,
    the baseline REINFORCE++-baseline and GRPO use instead."""
    import torch

    from b2b.advantages import rloo_advantages

    groups = groups or {"prompt A: answers differ": [1.0, 2.0, 3.0, 6.0],
                        "prompt B: all equally good": [7.0, 7.0, 7.0, 7.0]}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.8), sharey=True)
    axes = [axes] if len(groups) == 1 else list(axes)
    for ax, (title, rs) in zip(axes, groups.items()):
        r = torch.tensor(rs, dtype=torch.float64)
        a = rloo_advantages(r, k=len(rs))
        base = r - a  # the mean of the others
        xs = range(len(rs))
        ax.bar(xs, rs, width=0.55, color="#cfe2f3", edgecolor="0.3", label="reward $R_i$")
        ax.axhline(float(r.mean()), ls=":", color="0.4", lw=1, label="group mean")
        for x, b, ai, ri in zip(xs, base.tolist(), a.tolist(), rs):
            ax.plot([x - 0.32, x + 0.32], [b, b], color="k", lw=2.2, label="baseline: mean of the others" if x == 0 else None)
            moved = abs(ai) > 1e-9
            if moved:
                ax.annotate("", xy=(x, ri), xytext=(x, b),
                            arrowprops=dict(arrowstyle="-|>", color="C2" if ai > 0 else "C3", lw=1.8))
            ax.text(x + 0.3 if moved else x, (b + ri) / 2 if moved else b + 0.3, f"A = {ai:+.2f}" if moved else "A = 0",
                    fontsize=8.5, va="center", ha="left" if moved else "center",
                    color="C2" if ai > 0 else ("C3" if ai < 0 else "0.3"))
        ax.set_xticks(list(xs), [f"answer {i + 1}" for i in xs])
        ax.set_ylim(0, max(max(rs) for rs in groups.values()) * 1.45)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("reward")
    axes[0].legend(fontsize=8, loc="upper left", ncols=2)
    fig.suptitle(r"RLOO, one group of k answers per prompt: $A_i = R_i - \frac{1}{k-1}\sum_{j \ne i} R_j$", fontsize=11)
    fig.tight_layout()
    return fig


def plot_returns_to_go(reward: float = 5.0, kl: list[float] | None = None, beta: float = 1.0):
    """REINFORCE++'s per-token rewards and returns to go for one answer: the KL penalty
    -beta * kl_t at every token, the reward model's score added at the last
    (`b2b.advantages.token_level_rewards`), and G_t = sum_{s >= t} r_s (`returns_to_go`): an arrow
    under each token shows which tokens' penalties its return carries."""
    import torch

    from b2b.advantages import returns_to_go, token_level_rewards

    kl = kl or [0.1, 0.2, 0.3]
    T = len(kl)
    mask = torch.ones(1, T)
    r = token_level_rewards(torch.tensor([reward]), torch.tensor([kl]), mask, beta=beta)[0]
    g = returns_to_go(r[None], mask)[0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 4.6), sharex=True, height_ratios=(3, 1.4))
    xs = range(T)
    top.bar([x - 0.18 for x in xs], r.tolist(), width=0.34, color="C0",
            label=r"token reward $r_t = -\beta\,\mathrm{kl}_t$ (+ $R$ at the last)")
    top.bar([x + 0.18 for x in xs], g.tolist(), width=0.34, color="C2", alpha=0.75, label=r"return to go $G_t = \sum_{s \geq t} r_s$")
    for x, rv, gv in zip(xs, r.tolist(), g.tolist()):
        top.text(x - 0.18, rv + (0.1 if rv >= 0 else -0.1), f"{rv:+.2f}", ha="center", va="bottom" if rv >= 0 else "top", fontsize=8)
        top.text(x + 0.18, gv + 0.1, f"{gv:.2f}", ha="center", va="bottom", fontsize=8)
    top.axhline(0, color="0.3", lw=0.8)
    top.set_ylabel("reward")
    top.set_ylim(min(0.0, float(r.min())) - 0.6, float(max(g.max(), r.max())) * 1.6)
    top.legend(fontsize=8, loc="upper left", ncols=2)
    top.grid(axis="y", alpha=0.3)
    for t in xs:  # which penalties each return carries: from its own token to the end
        y = T - t
        bottom.annotate("", xy=(T - 1 + 0.25, y), xytext=(t - 0.25, y),
                        arrowprops=dict(arrowstyle="-|>", color="C2", lw=1.4))
        bottom.text(t - 0.3, y, f"$G_{t + 1}$", ha="right", va="center", fontsize=8.5)
    bottom.set_ylim(0.3, T + 0.7)
    bottom.set_yticks([])
    bottom.set_xticks(list(xs), [f"token {t + 1}\nkl = {k:g}" for t, k in enumerate(kl)])
    bottom.set_title("each return sums its own token's reward and every later one", fontsize=9)
    fig.suptitle(f"Returns to go over one answer (R = {reward:g}, beta = {beta:g}): the first token carries "
                 "the whole answer's KL", fontsize=10)
    fig.tight_layout()
    return fig


def plot_clipped_ratio(clip: float = 0.2):
    """PPO's clipped objective per token, min(rho A, clip(rho, 1 - eps, 1 + eps) A), against the ratio
    rho = pi / pi_old, for a positive and a negative advantage, with its gradient in log pi computed
    by autograd through `b2b.advantages.clipped_pg_loss`: shaded where the gradient is zero (the
    token has moved far enough in the direction its advantage pushes)."""
    import torch

    from b2b.advantages import clipped_pg_loss

    ratios = torch.linspace(0.4, 1.7, 261, dtype=torch.float64)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, a in zip(axes, (1.0, -1.0)):
        objective, grad = [], []
        for rho in ratios.tolist():
            lp = torch.tensor([[math.log(rho)]], dtype=torch.float64, requires_grad=True)
            loss, _ = clipped_pg_loss(lp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([[a]], dtype=torch.float64),
                                      torch.ones(1, 1), clip=clip)
            loss.backward()
            objective.append(-loss.item())
            grad.append(-lp.grad.item())
        xs = ratios.tolist()
        ax.plot(xs, [rho * a for rho in xs], ":", color="0.5", label=r"unclipped $\rho A$")
        ax.plot(xs, objective, color="C0", lw=2.2, label=r"clipped objective $\min(\rho A, \mathrm{clip}(\rho) A)$")
        flat = [abs(gr) < 1e-12 for gr in grad]
        lo, hi = ax.get_ylim()
        ax.fill_between(xs, lo, hi, where=flat, color="C3", alpha=0.12, step="mid",
                        label="gradient zero: no push further")
        ax.set_ylim(lo, hi)
        for edge in (1 - clip, 1 + clip):
            ax.axvline(edge, color="0.4", lw=0.8, ls="--")
        ax.axvline(1.0, color="0.2", lw=0.8)
        ax.set_title(f"advantage A = {a:+g}: " + ("raise this token's probability" if a > 0 else "lower it"), fontsize=10)
        ax.set_xlabel(r"ratio $\rho = \pi_\theta(y_t) / \pi_{\theta_{old}}(y_t)$ (dashed: $1 \pm \epsilon$)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("objective per token (maximised)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"PPO's clipped ratio, eps = {clip:g}: the objective stops paying once the ratio has moved eps "
                 "the advantage's way", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- notebook 09: over-optimisation

def _law_line(ax, kind: str, a: float, b: float, d_max: float, **kw):
    import torch

    from b2b.overopt import law

    d = torch.linspace(0, d_max, 100, dtype=torch.float64)
    ax.plot(d.tolist(), law(kind, d, a, b).tolist(), **kw)


def plot_bon_vs_rl(bon: dict, rl: list[dict], methods: list[str] | None = None):
    """Gao et al.'s figure at toy scale: gold gain (solid, with the fitted law) and proxy gain (dashed)
    against d = sqrt(KL to the initial policy), best-of-n on the left (`b2b.tools.overopt.bon_fit` of a
    record, with its `proxy_gain`), RL runs on the right (`rl_runs` rows: each seed's points and the
    fit to the method's pooled points), best-of-n's fitted gold drawn grey on both for comparison."""
    from b2b.overopt import fit_law

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    ax = axes[0]
    ax.plot(bon["d"], bon["gold_gain"], "o", color="C0", label="gold (measured)")
    _law_line(ax, "bon", bon["alpha"], bon["beta"], max(bon["d"]) * 1.05, color="0.5",
              label=f"fit: d ({bon['alpha']:.2f} - {bon['beta']:.2f} d), R$^2$ {bon['r2']:.3f}")
    if "proxy_gain" in bon:
        ax.plot(bon["d"], bon["proxy_gain"], "--", color="C0", alpha=0.7, label="proxy (reward-model units)")
    for x, n in zip(bon["d"], bon.get("n", [])):
        if n in (4, 16, 64, 256):
            ax.annotate(f"n={n}", (x, 0), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=7)
    ax.set_title("best-of-n against the proxy", fontsize=10)
    ax = axes[1]
    methods = methods or list(dict.fromkeys(r["method"] for r in rl))
    d_top = max((max(r["d"]) for r in rl if r["method"] in methods), default=1.0)
    for i, m in enumerate(methods):
        runs = [r for r in rl if r["method"] == m]
        c = f"C{i + 1}"
        for j, r in enumerate(runs):
            ax.plot(r["d"], r["gold_gain"], "o", color=c, ms=3, alpha=0.6)
            ax.plot(r["d"], r["proxy_gain"], "--", color=c, lw=0.8, alpha=0.5)
        f = fit_law("rl", [x for r in runs for x in r["d"]], [y for r in runs for y in r["gold_gain"]])
        _law_line(ax, "rl", f.alpha, f.beta, max(x for r in runs for x in r["d"]), color=c,
                  label=f"{runs[0].get('name', m)} ({len(runs)} seed{'s' * (len(runs) > 1)}): pooled fit R$^2$ {f.r2:.2f}")
    _law_line(ax, "bon", bon["alpha"], bon["beta"], min(d_top, max(bon["d"])), color="0.5", lw=2, alpha=0.6,
              label="best-of-n's fit (where measured)")
    ax.set_title("RL along its trajectory (dots: gold, dashed: proxy)", fontsize=10)
    for ax in axes:
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_xlabel("d = sqrt(KL bound of best-of-n)")
    axes[1].set_xlabel("d = sqrt(KL to the SFT policy, measured)")
    axes[0].set_ylabel("gain over the SFT policy")
    fig.suptitle("Gold rises, then falls, as the policy moves away from SFT: Gao et al.'s laws in the tiny world")
    fig.tight_layout()
    return fig


def plot_bon_scale(rows: list[dict], curves: dict[int, dict]):
    """Best-of-n's gold gain against d for proxies trained on more and more pairs (`curves`: pairs ->
    `bon_fit` of its record; points and fitted law), and the fitted peak (d*, R*) against the pairs
    (`rows`: `b2b.tools.overopt.scale_rows`)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    for i, (pairs, c) in enumerate(sorted(curves.items())):
        ax.plot(c["d"], c["gold_gain"], "o", color=f"C{i}", ms=4)
        _law_line(ax, "bon", c["alpha"], c["beta"], max(c["d"]), color=f"C{i}", label=f"{pairs:,} pairs")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("d = sqrt(KL bound of best-of-n)")
    ax.set_ylabel("gold gain over n = 1")
    ax.set_title("best-of-n against proxies of five sizes (dots: measured, lines: fit)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    xs = [r["pairs"] for r in rows]
    ax.plot(xs, [r["r_star"] or 0 for r in rows], "o-", color="C3", label="peak gold gain R*")
    ax.plot(xs, [r["d_star"] or 0 for r in rows], "s--", color="C4", label="where it peaks, d*")
    ax.set_xscale("log")
    ax.set_xlabel("reward model's training pairs")
    ax.set_title("the fitted peak grows and comes later", fontsize=10)
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_ensemble_bon(curves: dict[str, list[dict]]):
    """Best-of-n's gold against its KL bound for each single reward model of an ensemble (grey) and
    for the ensemble's objectives (`b2b.tools.overopt.run_ensemble`'s curves)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    names = {"mean": "ensemble mean", "worst": "worst case (min)", "uwo": "mean - variance (uncertainty-weighted)"}
    for k, c in curves.items():
        single = k.startswith("seed")
        label = ("seed 0 alone (the ladder's model)" if k == "seed0" else "the other seeds alone" if k == "seed1"
                 else None if single else names.get(k, k))
        ax.plot([r["d"] for r in c], [r["gold"] for r in c], "-" if single else "o-", lw=1.5 if k == "seed0" else 1 if single else 2,
                color="0.2" if k == "seed0" else "0.65" if single else None, alpha=0.9, label=label)
    ax.set_xlabel("d = sqrt(KL bound of best-of-n)")
    ax.set_ylabel("gold of the answer picked")
    ax.set_title("Best-of-n against one reward model and against an ensemble of four", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_penalty_frontier(without: list[dict], penalised: list[dict], alpha: float, beta: float, method: str = ""):
    """RL runs without a KL penalty (grey dots, with the RL law fitted to them) and with one (coloured by
    its coefficient): gold gain against d. On Gao et al.'s account the coloured dots lie on the grey
    curve, stopped earlier; above it, the penalty bought gold at equal distance."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in without:
        ax.plot(r["d"], r["gold_gain"], "o", color="0.6", ms=3)
    _law_line(ax, "rl", alpha, beta, max(x for r in without for x in r["d"]), color="0.4",
              label="no penalty: runs (dots) and the RL law's fit")
    coefs = sorted({r["kl_coef"] for r in penalised})
    for i, k in enumerate(coefs):
        for j, r in enumerate(x for x in penalised if x["kl_coef"] == k):
            ax.plot(r["d"], r["gold_gain"], "o", color=f"C{i + 1}", ms=4, label=f"KL coefficient {k}" if j == 0 else None)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("d = sqrt(KL to the SFT policy)")
    ax.set_ylabel("gold gain over the SFT policy")
    ax.set_title((f"{method}: " if method else "") + "a KL penalty, early stop on the same curve or a better curve?",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
