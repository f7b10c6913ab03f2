"""Writes notebooks/09_overoptimisation.ipynb (unexecuted): python notebooks/builders/09_overoptimisation.py, then
python -m b2b.tools.execute_notebooks 09 (the notebook is committed executed)."""
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[2]
SETUP = "".join(nbf.read(ROOT / "notebooks" / "03_vanilla_reinforce.ipynb", as_version=4).cells[1].source)

cells = []


def md(text: str) -> None:
    cells.append(nbf.v4.new_markdown_cell(text.strip("\n")))


def code(text: str) -> None:
    cells.append(nbf.v4.new_code_cell(text.strip("\n")))


md(r"""
# 09 · Over-optimisation: Gao et al.'s laws in the tiny world

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/b2b-course/b2b/blob/main/notebooks/09_overoptimisation.ipynb)

*Runtime: 5 s on a 2-core CPU (`tiny` profile), the same on a Colab T4 (`colab` profile): every figure is read back from
the shipped records in `data/runs/overopt-tiny/` and `data/runs/showdown-tiny/` (measured on a fresh clone). The lab's
records are the tiny world's, so the notebook reads the same ones in every profile. `RETRAIN = True`
produces them again in `tiny` (`python -m b2b.tools.overopt all`): about 45 minutes on 2 cores.*

Notebooks 04-08 showed over-optimisation one run at a time: the proxy reward climbs while the gold judge's verdict
climbs, stops, then falls. Gao, Schulman and Hilton (2022, *Scaling Laws for Reward Model Overoptimization*) turned
that picture into a **law**. Measure how far a policy has moved from where it started by

$$d = \sqrt{\mathrm{KL}(\pi \,\|\, \pi_\text{init})},$$

and the gold reward it gains (gold minus the initial policy's, so $R(0) = 0$) follows

$$R_\text{bon}(d) = d\,(\alpha_\text{bon} - \beta_\text{bon}\, d) \qquad\text{and}\qquad R_\text{RL}(d) = d\,(\alpha_\text{RL} - \beta_\text{RL} \log d)$$

for best-of-n sampling and for RL. Gold rises ($\alpha$), then the proxy's errors win ($\beta$) and it falls. Gao et al.
also found that the peak grows and comes later as the reward model grows (in parameters, and in training data), that RL
is less KL-efficient than best-of-n, and that a KL penalty acts like early stopping. Coste et al. (2024) then showed that
a conservative combination of an **ensemble** of reward models (the worst case, or the mean less the models'
disagreement) largely removes best-of-n's over-optimisation, and PPO's together with a small KL penalty. Gao et al. needed a 6-billion-parameter "gold" reward model to play the
judge; the tiny world has a real one, so all of this can be measured on a laptop.

In this notebook you will:

1. measure best-of-n against the shipped reward model and write its KL bound (exercise);
2. fit Gao et al.'s best-of-n law to it (exercise);
3. repeat best-of-n against reward models trained on 1,000 to 100,000 pairs;
4. put RL's trajectories (notebook 08's runs) beside best-of-n and fit the RL law;
5. ask whether a KL penalty moves the gold-vs-$d$ curve or only stops the run earlier on it;
6. test a candidate fix: an ensemble of four reward models, for best-of-n and for one RL run.

The lab's claims were written in `b2b.overopt.CLAIMS` before any of its runs (and before notebook 08's records were
analysed this way); section 7 reports each, whichever way it fell.
""")

code(SETUP)

code(r"""
import json

import torch
from IPython.display import Markdown

RETRAIN = False  # True: produce every record of the lab again in the tiny profile (about 45 minutes on 2 cores)
lab = b2b.tools.overopt.lab(retrain=RETRAIN)  # the folder of the lab's records (the shipped ones by default)
showdown = b2b.config.data_dir() / "runs" / "showdown-tiny"  # notebook 08's RL runs, read along their evaluations
print("records:", ", ".join(sorted(p.name for p in lab.iterdir())))
""")

md(r"""
## 1. Best-of-n against the proxy

Best-of-n trains nothing: sample $n$ answers to a prompt from the SFT policy and keep the one the reward model scores
highest. It is still an optimiser. The larger $n$, the harder it pushes on the reward model, and the further the answers
it keeps are from what the SFT policy usually says. How far? If the base policy never gives the same answer twice (no
answer has a noticeable probability), the best-of-$n$ distribution has KL to the base policy

$$\mathrm{KL}_\text{bon}(n) = \log n - \frac{n-1}{n}\ \text{nats}.$$

Beirami et al. (2024) showed this is an **upper bound**: the true KL is smaller when the base policy repeats answers,
as a sharply peaked SFT policy does. Write it for a tensor of $n$:
""")

code(r"""
def my_bon_kl(n):
    # n: (N,) long tensor of sample counts -> (N,) the analytic KL of best-of-n from its base policy, in nats
    raise NotImplementedError  # your code here


b2b.exercises.check_bon_kl(my_bon_kl);
# stuck? b2b.exercises.solution("bon_kl") prints b2b's version
""")

md(r"""
**How the curve is measured.** `python -m b2b.tools.overopt bon` draws 256 answers to each of 512 held-out prompts from
the SFT policy once, and the gold judge and the reward model score every one. Best-of-$n$ for every $n \le 256$ then
comes from the same draws, with no resampling noise: sort a prompt's 256 answers by proxy score; the answer of rank $i$
(0 = lowest) is the best of a random $n$-subset with probability $\binom{i}{n-1} / \binom{256}{n}$
(`b2b.overopt.best_of_n_weights`). For 8 answers and $n = 3$:
""")

code(r"""
w = b2b.overopt.best_of_n_weights(8, 3)
print("rank (0 = lowest proxy):", list(range(8)))
print("P(best of 3):           ", [round(x, 3) for x in w.tolist()], " sum", round(float(w.sum()), 6))
""")

code(r"""
bon_kl = b2b.exercises.yours(my_bon_kl, "bon_kl")
rec = json.loads((lab / "bon-rm-level1.json").read_text())  # best-of-n against the shipped reward model (100,000 pairs)
curve = rec["curve"]
kl = bon_kl(torch.tensor([r["n"] for r in curve]))
b2b.widgets.show_table([{"n": r["n"], "KL bound (nats)": round(float(k), 3), "d": round(r["d"], 2),
                         "proxy": round(r["proxy"], 2), "gold": round(r["gold"], 2),
                         "gold, 95% interval": f"{r['gold_lo']:.2f} to {r['gold_hi']:.2f}"} for r, k in zip(curve, kl)])
""")

code(r"""
peak = max(curve, key=lambda r: r["gold"])
first, last = curve[0], curve[-1]
Markdown(f"Against the shipped reward model, gold climbs from {first['gold']:.2f} (n = 1, the SFT policy itself) to "
         f"**{peak['gold']:.2f} at n = {peak['n']}**, then falls to {last['gold']:.2f} at n = {last['n']}, while the proxy "
         f"rises all the way ({first['proxy']:.2f} to {last['proxy']:.2f}). Past n = {peak['n']}, more selection pressure "
         f"buys proxy score through the reward model's errors rather than gold. (The interval is a bootstrap "
         f"over the {rec['prompts']} prompts.) The SFT policy repeats itself: of the {rec['n']} answers to a prompt, "
         f"{rec['distinct_answers']:.0f} differ on average, so at large n the true KL of best-of-n is below the bound "
         f"in the table.")
""")

md(r"""
## 2. Fitting the law

Gao et al.'s best-of-n law, $R_\text{bon}(d) = d(\alpha - \beta d) = \alpha d - \beta d^2$, is linear in $(\alpha, \beta)$,
so the least-squares fit is one linear solve: a design matrix with the columns $d$ and $-d^2$, no column of ones
(the law passes through the origin: $R(0) = 0$), and the gold gains as the target. Write it
(`torch.linalg.lstsq(X, y[:, None]).solution` solves it):
""")

code(r"""
def my_fit_bon_law(d, gain):
    # d: (J,) distances sqrt(KL), gain: (J,) gold minus n = 1's -> (alpha, beta) of gain = d (alpha - beta d),
    # returned as a pair (a tensor of the two values will do)
    raise NotImplementedError  # your code here


b2b.exercises.check_fit_bon_law(my_fit_bon_law);
# stuck? b2b.exercises.solution("fit_bon_law") prints b2b's version
""")

code(r"""
fit_bon_law = b2b.exercises.yours(my_fit_bon_law, "fit_bon_law")
d = torch.tensor([r["d"] for r in curve], dtype=torch.float64)
gain = torch.tensor([r["gold_gain"] for r in curve], dtype=torch.float64)
alpha, beta = (float(x) for x in fit_bon_law(d, gain))
fit = b2b.overopt.fit_law("bon", d, gain)  # b2b's: the same fit, with R^2 and the peak
n_star = min(range(1, 4097), key=lambda n: abs(b2b.overopt.bon_kl(n) - fit.d_star ** 2))
Markdown(f"Your fit: alpha = {alpha:.2f}, beta = {beta:.2f}. b2b's `fit_law`: alpha = {fit.alpha:.2f}, "
         f"beta = {fit.beta:.2f}, R² = {fit.r2:.3f}. The fitted curve peaks at d* = alpha / (2 beta) = {fit.d_star:.2f} "
         f"(a KL of {fit.d_star ** 2:.2f} nats, n ≈ {n_star}) with R* = alpha² / (4 beta) = {fit.r_star:+.2f} gold points; "
         f"the measured peak was {peak['gold_gain']:+.2f} at n = {peak['n']}. Two numbers describe the whole curve.")
""")

md(r"""
## 3. The proxy's scale

`python -m b2b.tools.overopt ladder` trains level-1 reward models on the first 1,000, 3,000, 10,000 and 30,000 training
pairs (the shipped recipe otherwise) and repeats best-of-n against each, on the same 512 × 256 answers; the shipped
model saw all 100,000. Gao et al.'s finding to compare with: the peak gold grows, and comes later, as the proxy's
training data grows (they varied its parameters too; here only the data).
One seed per size; section 6 trains four seeds of the 10,000-pair model, which shows how far the seed alone moves the fit.
""")

code(r"""
scale = b2b.tools.overopt.scale_rows(lab)
b2b.widgets.show_table([{"pairs": f"{r['pairs']:,}", "pair accuracy": f"{r['pair_accuracy']:.3f}",
                         "Spearman with gold": round(r["gold_spearman"], 2), "peak gold (n)": f"{r['peak_gold']:.2f} ({r['peak_n']})",
                         "gold at n = 256": round(r["last_gold"], 2), "alpha": round(r["alpha"], 2), "beta": round(r["beta"], 2),
                         "R²": f"{r['r2']:.3f}", "d*": round(r["d_star"], 2), "R*": round(r["r_star"], 2)} for r in scale])
curves = {r["pairs"]: b2b.tools.overopt.bon_fit(json.loads((lab / f"bon-{r['reward_model']}.json").read_text()))
          for r in scale}
b2b.plots.plot_bon_scale(scale, curves);
""")

code(r"""
checks = {c["claim"]: c for c in b2b.tools.overopt.claims(lab, showdown)}
small, big = scale[0], scale[-1]
small_top = next(r for r in json.loads((lab / f"bon-{small['reward_model']}.json").read_text())["curve"]
                 if r["n"] == small["peak_n"])
ens = json.loads(next(lab.glob("ensemble-rm-*.json")).read_text())  # four seeds of one proxy (section 6)
seed_fits = [b2b.tools.overopt.bon_fit(c) for k, c in ens["curves"].items() if k.startswith("seed")]
spread = max(f["d_star"] for f in seed_fits) - min(f["d_star"] for f in seed_fits)
clear = [f"{a['pairs']:,} → {b['pairs']:,} ({b['d_star'] - a['d_star']:+.2f})" for a, b in zip(scale, scale[1:])
         if b["d_star"] - a["d_star"] > spread]
say = {True: "holds", False: "does not hold", None: "was not measured"}
Markdown(f"From {small['pairs']:,} to {big['pairs']:,} pairs the fitted peak R* goes from {small['r_star']:+.2f} to "
         f"{big['r_star']:+.2f} gold points and d* from {small['d_star']:.2f} to {big['d_star']:.2f}: Gao et al.'s "
         f"finding, at toy scale (claim `peak_rises` {say[checks['peak_rises']['holds']]}). Every fit has "
         f"R² ≥ {min(r['r2'] for r in scale):.3f}. How much of that is the seed? Four seeds of the {ens['pairs']:,}-pair "
         f"model alone give R* {min(f['r_star'] for f in seed_fits):+.2f} to {max(f['r_star'] for f in seed_fits):+.2f} and "
         f"d* {min(f['d_star'] for f in seed_fits):.2f} to {max(f['d_star'] for f in seed_fits):.2f}. The rise of R* is far "
         f"beyond that. The seed alone moves d* by {spread:.2f}; between neighbouring sizes d* moves by more than that at "
         f"{', '.join(clear) if clear else 'no step'}, and by less at the others, so the later peak is clear over those "
         f"steps and across the whole range. The smallest proxy, {checks['interior_peak']['detail']}; claim `interior_peak` "
         f"{say[checks['interior_peak']['holds']]}"
         + (", but only just: the gain at its peak is not distinguishable from zero, so best-of-n against it gains "
            "nothing measurable before it loses." if small_top.get("gain_lo") is not None and small_top["gain_lo"] <= 0 else "."))
""")

md(r"""
## 4. RL along its trajectory

RL moves the policy itself. Notebook 08's showdown evaluated every run every 25 steps on the same 512 held-out prompts,
one answer each, and recorded gold and the KL to the SFT policy (`kl_ref`, the mean over answers of
$\sum_t \log \pi(y_t) - \log \pi_\text{SFT}(y_t)$). Each evaluation is one point $(d, R)$ on the run's trajectory, so the
shipped records are enough; `b2b.tools.overopt.rl_runs` reads them and fits $R_\text{RL}(d) = d(\alpha - \beta \log d)$
to each run. Its peak: $d^* = e^{\alpha/\beta - 1}$, $R^* = \beta d^*$, and no peak when $\beta \le 0$. Three methods: vanilla REINFORCE and RLOO k=4, both without a KL penalty, and REINFORCE++ (its per-token
KL penalty keeps it close to SFT). The grey curve on the right is best-of-n's fit from the left, for comparison at equal d.
""")

code(r"""
all_rl = b2b.tools.overopt.showdown_runs(showdown)  # every showdown run with its fit (the table shows three methods)
rl = [r for r in all_rl if r["method"] in b2b.tools.overopt.SHOWN]
b2b.widgets.show_table([{"run": r["run"], "alpha": round(r["alpha"], 2), "beta": round(r["beta"], 2), "R²": round(r["r2"], 2),
                         "d*": (round(r["d_star"], 2) if r["peak_in_range"] else "no peak (beta ≤ 0)" if r["d_star"] is None
                                else "beyond the data"),
                         "R*": round(r["r_star"], 2) if r["peak_in_range"] else "-", "largest d": round(max(r["d"]), 2),
                         "largest gold gain": round(max(r["gold_gain"]), 2)} for r in rl])
bon = {**b2b.tools.overopt.bon_fit(rec), "n": [r["n"] for r in curve],
       "proxy_gain": [r["proxy"] - curve[0]["proxy"] for r in curve]}
b2b.plots.plot_bon_vs_rl(bon, rl, methods=list(b2b.tools.overopt.SHOWN));
""")

code(r"""
gaps = [b2b.tools.overopt.rl_vs_bon(r, bon) for r in all_rl]
fails = [g for g in gaps if not g["below"]]
poor = [r for r in rl if r["r2"] < 0.9 and r["method"] != "reinforcepp"]  # the runs without a KL penalty
pp = [r for r in rl if r["method"] == "reinforcepp"]
Markdown(f"Over the distances both reach, RL's fitted gold lies below best-of-n's on average in {sum(g['gap'] < 0 for g in gaps)} "
         f"of the showdown's {len(gaps)} runs (mean gap {min(g['gap'] for g in gaps):+.2f} to {max(g['gap'] for g in gaps):+.2f} "
         f"gold points) and at every one of 50 distances from d_max/50 to d_max in {sum(g['below'] for g in gaps)} of "
         f"{len(gaps)}, so the claim as fixed (`rl_below_bon`: every distance, every run) {say[checks['rl_below_bon']['holds']]}"
         + (f". Where RL's fit is above, it is so only up to d = {max(g['above_up_to'] for g in fails):.2f}, before those "
            f"runs' first evaluation (d ≥ {min(g['first_d'] for g in fails):.2f}): a fit of the RL law with beta > 0 has an "
            f"infinite slope at d = 0, so it starts above best-of-n's (in most of the other runs too, at distances below the "
            f"first of the 50). From each run's first measured distance on, RL's fit is below in "
            f"{sum(g['below_measured'] for g in gaps)} of {len(gaps)} runs." if fails else ".")
         + " One more reason to read this as RL being less KL-efficient, as Gao et al. found: best-of-n's d is the square "
         "root of its KL *bound*, and its true KL is smaller (section 1), so its true curve lies further left still. "
         f"The RL law fits less well than best-of-n's ({checks['fits']['detail']}; claim `fits` "
         f"{say[checks['fits']['holds']]}). Among the runs above without a KL penalty, it misses both a plateau and a steep "
         "fall: "
         + ", ".join(f"{r['run']} (R² {r['r2']:.2f})" for r in poor)
         + f". And REINFORCE++'s runs stop at d ≤ {max(max(r['d']) for r in pp):.2f}, too close to SFT to pin down beta: "
         f"it comes out between {min(r['beta'] for r in pp):+.2f} and {max(r['beta'] for r in pp):+.2f} over the seeds, "
         "so their fitted peaks, where there is one, say little.")
""")

md(r"""
## 5. The KL penalty: a brake, or a better road?

Gao et al. found that runs with a KL penalty trace the same gold-vs-$d$ curve as runs without it, only stopping
earlier: the penalty acts like early stopping. The showdown has two pairs of methods that differ only in the penalty:
RLOO k=4 with and without it, and vanilla REINFORCE with and without it (coefficient 0.5, three seeds each).
`b2b.tools.overopt.kl_frontier` fits the RL law to the pooled points of the runs without the penalty and measures how far
each penalised run's points lie from that curve (mean residual over the distances it reached), beside the same measure
for each unpenalised run over the same distances. The claim fixed beforehand: a penalised run lies within the
unpenalised runs' own residuals (between the smallest and the largest), rather than above them.
""")

code(r"""
table, fronts = [], {}
for without, with_ in b2b.tools.overopt.FRONTIER:
    a, b = [r for r in all_rl if r["method"] == without], [r for r in all_rl if r["method"] == with_]
    fronts[without] = (a, b, b2b.tools.overopt.kl_frontier(a, b))
    for r in fronts[without][2]["runs"]:
        table.append({"penalised run": r["run"], "up to d": round(r["d_max"], 2), "its mean residual": round(r["mean_residual"], 2),
                      "unpenalised runs' own": ", ".join(f"{x:+.2f}" for x in r["own_residuals"]),
                      "within them": r["on_frontier"], "above them all": r["above"]})
b2b.widgets.show_table(table)
a, b, f = fronts["rloo-k-4-no-kl"]
b2b.plots.plot_penalty_frontier(a, b, f["alpha"], f["beta"], method="RLOO k=4");
""")

code(r"""
front_runs = [r for _, _, f in fronts.values() for r in f["runs"]]
within, above = sum(bool(r["on_frontier"]) for r in front_runs), sum(bool(r["above"]) for r in front_runs)
Markdown(f"Claim `kl_frontier` {say[checks['kl_frontier']['holds']]}: {within} of {len(front_runs)} penalised runs lie "
         f"within the unpenalised runs' own residuals, {above} of {len(front_runs)} above all of them. The RL law fits the "
         "unpenalised runs poorly at small d (their own residuals there are all below zero), so the fair comparison is with "
         "them, not with zero"
         + (": at equal d, most penalised runs hold more gold than any unpenalised run did. The penalty keeps a run near "
            "SFT for all its steps, where an unpenalised run only passes through; in this world that time buys some gold "
            "at the same distance, so early stopping is not the whole of the penalty's effect." if above > len(front_runs) / 2
            else ": early stopping explains the penalty's effect here."))
""")

md(r"""
## 6. A candidate fix: an ensemble of reward models

Coste et al. (2024) train several reward models that differ only in their seed and optimise a combination of their
scores: the **mean**, the **worst case** (the minimum), or an **uncertainty-weighted** mean (the mean less λ times the
models' variance). An answer that one model over-scores by accident is not over-scored by all, so the conservative
combinations (worst case, uncertainty-weighted) are harder to exploit; they found these remove best-of-n's
over-optimisation, and PPO's when combined with a small KL penalty. `python -m b2b.tools.overopt ensemble` trains four level-1 models on the same 10,000 pairs with seeds 0-3 (the
size whose best-of-n lost the most gold past its peak in section 3), standardises each on the SFT answers, and repeats best-of-n
against each model alone and against the three combinations (`b2b.overopt.ensemble_score`, λ = 1 on standardised
scores).
""")

code(r"""
b2b.widgets.show_table([{"reward model": m["name"], "seed": m["seed"], "pair accuracy": round(m["metrics"]["pair_accuracy"], 3),
                         "Spearman with gold": round(m["metrics"]["gold_spearman"], 2)} for m in ens["members"]])
rows_e = []
for name, c in ens["curves"].items():
    top = max(c, key=lambda r: r["gold"])
    f = b2b.tools.overopt.bon_fit(c)
    rows_e.append({"picked by": name, "peak gold (n)": f"{top['gold']:.2f} ({top['n']})", "gold at n = 256": round(c[-1]["gold"], 2),
                   "lost from the peak": round(top["gold"] - c[-1]["gold"], 2), "alpha": round(f["alpha"], 2),
                   "beta": round(f["beta"], 2), "R²": round(f["r2"], 3), "d*": round(f["d_star"], 2), "R*": round(f["r_star"], 2)})
b2b.widgets.show_table(rows_e)
singles = [r for r in rows_e if r["picked by"].startswith("seed")]
print(f"the seed alone, {len(singles)} models on the same {ens['pairs']:,} pairs: R* {min(r['R*'] for r in singles):+.2f} to "
      f"{max(r['R*'] for r in singles):+.2f}, d* {min(r['d*'] for r in singles):.2f} to {max(r['d*'] for r in singles):.2f}")
b2b.plots.plot_ensemble_bon(ens["curves"]);
""")

md(r"""
**And RL?** `python -m b2b.tools.overopt rl` trains RLOO k=4 with the showdown's settings but 300 steps rather than
600, seed 0, against the ensemble's seed-0 model alone and against the worst case of all four (`b2b.overopt.Ensemble`
scores a rollout as a reward model does, so `b2b.train` takes it unchanged): first without a KL penalty (does the
ensemble alone hold RL back?), then with the showdown's (`--method "RLOO k=4 + KL"`, coefficient 0.5: Coste et al.'s
setting, an ensemble and a small penalty). The figures are notebooks 06 and 08's, against the KL itself (not d); the
proxy panels show each run's own reward: the single model's score, the ensemble's standardised worst case, two
different units.
""")

code(r"""
runs_e, runs_kl = {}, {}
for key, label in (("single", "one reward model"), ("worst", "worst case of four")):
    for runs, tag in ((runs_e, ""), (runs_kl, "-kl")):
        d = lab / f"rl-{key}-{ens['pairs']}{tag}"
        if d.is_dir():
            runs[label] = b2b.runs.History(evals=b2b.tools.overopt.record_evals(d))
for runs, what in ((runs_e, "without a KL penalty"), (runs_kl, "with the KL penalty")):
    if runs:
        b2b.plots.plot_kl_frontier(runs).suptitle(f"RLOO k=4 {what}: against one reward model and against four")
    else:
        print(f"no RL runs {what} against the ensemble in", lab)
""")

code(r"""
def loss(c):
    return max(r["gold"] for r in c) - c[-1]["gold"]


cv = ens["curves"]
pairs_kl = list(zip(*(h.evals[1:] for h in runs_kl.values()))) if len(runs_kl) == 2 else []
ahead = sum(w["gold_mean"] > s_["gold_mean"] for s_, w in pairs_kl)
drops = [max(e["gold_mean"] for e in h.evals) - h.evals[-1]["gold_mean"] for h in runs_kl.values()]
at300 = [e["gold_mean"] for d in sorted(showdown.glob("rloo-k-4-kl-seed*"))
         for e in b2b.tools.overopt.record_evals(d) if e["step"] == 300]
seed_spread = max(at300) - min(at300) if at300 else float("nan")
finals = [h.evals[-1]["gold_mean"] for h in runs_e.values()]
finals_start = min(h.evals[0]["gold_mean"] for h in runs_e.values()) if runs_e else 0.0
Markdown(f"For best-of-n, the worst case loses {loss(cv['worst']):.2f} gold points from its own peak by n = 256, the mean "
         f"{loss(cv['mean']):.2f}, the uncertainty-weighted {loss(cv['uwo']):.2f}, against "
         f"{min(loss(cv[k]) for k in cv if k.startswith('seed')):.2f} to {max(loss(cv[k]) for k in cv if k.startswith('seed')):.2f} "
         f"for the single models: claim `worst_case`, read as less than every one of the four seeds, "
         f"{say[checks['worst_case']['holds']]} (against seed 0, the model the ladder and the RL run use, "
         f"{loss(cv['worst']):.2f} against {loss(cv['seed0']):.2f}). The combinations keep more "
         f"gold at n = 256 than the seed-0 model alone ({cv['worst'][-1]['gold']:.2f} against {cv['seed0'][-1]['gold']:.2f}), "
         f"but no more than the luckiest single seed ({max(cv[k][-1]['gold'] for k in cv if k.startswith('seed')):.2f}). "
         f"For RL: {checks['rl_ensemble']['detail']}, so claim `rl_ensemble` {say[checks['rl_ensemble']['holds']]}"
         + (" by the letter only: both runs end collapsed (gold near 1), and a difference between two collapsed runs "
            "of one seed says nothing. Without a KL penalty, four reward models of the same data and recipe, each "
            "agreeing only loosely with gold, were as easy to exploit as one."
            if finals and max(finals) < finals_start - 1 else ".")
         + (f" In Coste et al.'s setting, {checks['rl_ensemble_kl']['detail']}; claim `rl_ensemble_kl` "
            f"{say[checks['rl_ensemble_kl']['holds']]}. The single model's run ended {drops[0]:.2f} below its own peak, "
            f"the ensemble's {drops[1]:.2f}, and the ensemble's run is ahead at {ahead} of the {len(pairs_kl)} evaluations "
            f"after step 0; the showdown's three seeds of the same method differ by {seed_spread:.2f} at step 300. With "
            "one seed each, that hints that the ensemble held its gold better under the penalty; it does not show it."
            if checks["rl_ensemble_kl"]["holds"] is not None else ""))
""")

md(r"""
## 7. The claims

Fixed in `b2b.overopt.CLAIMS` before the lab's runs (and before notebook 08's records were analysed this way), each
checked against the records by `b2b.tools.overopt.claims`:
""")

code(r"""
Markdown(b2b.tools.overopt.claims_table(list(checks.values())))
""")

md(r"""
## Check yourself

1. Best-of-n against the shipped reward model: why does gold fall past its peak while the proxy keeps rising?
2. What is best-of-n's KL bound at n = 256, and why is the true KL in this world smaller?
3. What happened to the fitted peak (d*, R*) from the smallest proxy to the largest, and how much of it could the seed explain?
4. Does the KL penalty only stop the runs earlier on the same curve, by the records of section 5?
5. Why did the worst-case ensemble not stop RL in section 6, though for best-of-n it lost less gold than the seed-0 model alone?
""")

code(r"""
ans_peak = (f"The proxy rises from {first['proxy']:.2f} to {last['proxy']:.2f} over n = 1 to {last['n']}, gold peaks at "
            f"{peak['gold']:.2f} (n = {peak['n']}) and ends at {last['gold']:.2f}, still above n = 1's. Beyond the peak, "
            "choosing among more answers raises the proxy score of the pick more through the reward model's errors than "
            "through quality: the picks the reward model over-scores most win more often.")
ans_kl = (f"log 256 - 255/256 = {b2b.overopt.bon_kl(256):.2f} nats (d = {b2b.overopt.bon_kl(256) ** 0.5:.2f}). The formula "
          f"assumes all answers differ; the SFT policy repeats itself ({rec['distinct_answers']:.0f} different answers "
          f"among {rec['n']}, on average), and ties lower the true KL (Beirami et al. 2024).")
ans_scale = (f"R* from {small['r_star']:+.2f} to {big['r_star']:+.2f} gold points, d* from {small['d_star']:.2f} to "
             f"{big['d_star']:.2f}: a better proxy can be optimised further before it fails, and its peak is higher. The "
             f"seed alone moves R* by {max(f['r_star'] for f in seed_fits) - min(f['r_star'] for f in seed_fits):.2f} and d* by "
             f"{max(f['d_star'] for f in seed_fits) - min(f['d_star'] for f in seed_fits):.2f} at {ens['pairs']:,} pairs: "
             f"the rise of R* is real; d* rises by more than that at {len(clear)} of the {len(scale) - 1} steps.")
ans_kl_pen = (f"Not only: {within} of {len(front_runs)} penalised runs lie within the unpenalised runs' residuals from "
              f"their fitted curve, {above} above all of them, so at equal d the penalty also bought gold.")
ans_ens = (f"Its members are four seeds of one recipe on the same {ens['pairs']:,} pairs, each agreeing only loosely with "
           f"gold (Spearman {min(m['metrics']['gold_spearman'] for m in ens['members']):.2f} to "
           f"{max(m['metrics']['gold_spearman'] for m in ens['members']):.2f}). An answer all four over-score is still "
           "over-scored by their worst case, and RL without a KL penalty moves until it finds such answers. Best-of-n can only choose among the "
           "SFT policy's own answers; RL moves to answers the SFT policy never writes. With the KL penalty the "
           f"ensemble's run lost less from its peak ({drops[1]:.2f} against {drops[0]:.2f}), but with one seed each that "
           "is a hint, not a result.")
b2b.exercises.answers(ans_peak, ans_kl, ans_scale, ans_kl_pen, ans_ens)
""")

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
               "language_info": {"name": "python"}}
nbf.write(nb, ROOT / "notebooks" / "09_overoptimisation.ipynb")
print("wrote notebooks/09_overoptimisation.ipynb")
