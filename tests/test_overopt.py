"""The over-optimisation lab's pure parts (b2b.overopt) on hand-made numbers."""
import itertools
import json
import math

import pytest
import torch

from b2b import overopt as O


def test_bon_kl_is_log_n_minus_n_minus_one_over_n():
    assert O.bon_kl(1) == 0.0
    assert O.bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert O.bon_kl(256) == pytest.approx(math.log(256) - 255 / 256)
    assert torch.allclose(O.bon_kl(torch.tensor([1, 4])), torch.tensor([0.0, math.log(4) - 0.75], dtype=torch.float64))
    with pytest.raises(ValueError, match="n must be >= 1"):
        O.bon_kl(0)


@pytest.mark.parametrize("N, n", [(5, 1), (5, 2), (6, 3), (6, 6)])
def test_best_of_n_weights_match_every_subset(N, n):
    count = torch.zeros(N, dtype=torch.float64)
    subsets = list(itertools.combinations(range(N), n))
    for s in subsets:
        count[max(s)] += 1  # ranks ascending: the best of the subset is its highest rank
    assert torch.allclose(O.best_of_n_weights(N, n), count / len(subsets))
    assert O.best_of_n_weights(N, n).sum().item() == pytest.approx(1.0)


def test_best_of_n_curve_picks_by_proxy_and_scores_by_gold():
    # prompt 0: proxy ranks the samples c < a < b; gold disagrees with the proxy's best
    proxy = torch.tensor([[2.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    gold = torch.tensor([[5.0, 1.0, 9.0], [1.0, 2.0, 3.0]])
    rows = O.best_of_n_curve(proxy, gold, [1, 2, 3])
    assert [r["n"] for r in rows] == [1, 2, 3]
    assert rows[0]["gold"] == pytest.approx((5 + 1 + 9 + 1 + 2 + 3) / 6)  # n = 1: the plain mean
    # n = 3: the proxy's best of each prompt, gold 1 and 3
    assert rows[2]["gold"] == pytest.approx(2.0) and rows[2]["proxy"] == pytest.approx(2.5)
    # n = 2, prompt 0: pairs {a,b}->b(1), {a,c}->a(5), {b,c}->b(1); prompt 1: {0,1}->2, {0,2}->3, {1,2}->3
    assert rows[1]["gold"] == pytest.approx(((1 + 5 + 1) / 3 + (2 + 3 + 3) / 3) / 2)
    assert rows[1]["d"] == pytest.approx(math.sqrt(O.bon_kl(2)))
    with pytest.raises(ValueError, match="prompts, samples"):
        O.best_of_n_curve(proxy, gold[:, :2], [1])


@pytest.mark.parametrize("kind, alpha, beta", [("bon", 1.5, 0.4), ("rl", 1.2, 0.3)])
def test_fit_recovers_the_law_and_its_peak(kind, alpha, beta):
    d = torch.linspace(0.0, 3.0, 13, dtype=torch.float64)
    fit = O.fit_law(kind, d, O.law(kind, d, alpha, beta))
    assert fit.alpha == pytest.approx(alpha) and fit.beta == pytest.approx(beta) and fit.r2 == pytest.approx(1.0)
    grid = torch.linspace(1e-3, 30.0, 300001, dtype=torch.float64)
    curve = O.law(kind, grid, alpha, beta)
    assert fit.d_star == pytest.approx(grid[curve.argmax()].item(), abs=1e-3)
    assert fit.r_star == pytest.approx(curve.max().item(), rel=1e-6)


def test_fit_reports_a_poor_fit_and_no_peak_without_a_downturn():
    d = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    noisy = O.fit_law("bon", d, torch.tensor([0.0, 1.0, -1.0, 1.0, -1.0]))
    assert noisy.r2 < 0.5
    rising = O.fit_law("bon", d, d * (1 + 0.1 * d))  # convex: beta < 0, no interior peak
    assert rising.beta < 0 and rising.d_star is None and rising.r_star is None
    with pytest.raises(ValueError, match=">= 3"):
        O.fit_law("rl", [0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="kind must be"):
        O.fit_law("dpo", d, d)


def test_ensemble_objectives():
    s = torch.tensor([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]])  # 3 models x 2 answers
    assert torch.allclose(O.ensemble_score(s, "mean"), torch.tensor([2.0, 2.0]))
    assert torch.allclose(O.ensemble_score(s, "worst"), torch.tensor([1.0, 0.0]))
    var = torch.tensor([2 / 3, 8 / 3])  # population variance over the models (Coste et al.'s penalty)
    assert torch.allclose(O.ensemble_score(s, "uwo", lam=0.5), torch.tensor([2.0, 2.0]) - 0.5 * var)
    with pytest.raises(ValueError, match="at least 2 models"):
        O.ensemble_score(s[:1])


def test_claims_are_fixed_and_named():
    assert [name for name, _ in O.CLAIMS] == ["interior_peak", "rl_below_bon", "fits", "peak_rises", "worst_case",
                                              "kl_frontier", "rl_ensemble", "rl_ensemble_kl"]


def test_bon_curve_gain_and_bootstrap_interval():
    from b2b.tools.overopt import bon_curve, ns_up_to

    assert ns_up_to(6) == [1, 2, 4, 6] and ns_up_to(8) == [1, 2, 4, 8]
    g = torch.Generator().manual_seed(0)
    proxy, gold = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g)
    gold = gold + proxy  # gold rises with the proxy here: best-of-n gains
    rows = bon_curve(proxy, gold, n_boot=50)
    assert [r["n"] for r in rows] == [1, 2, 4, 8] and rows[0]["gold_gain"] == 0.0
    assert rows[-1]["gold_gain"] > 0.5
    assert rows[-1]["gold"] == pytest.approx(gold.gather(1, proxy.argmax(1, keepdim=True)).mean().item())
    assert all(r["gold_lo"] <= r["gold"] <= r["gold_hi"] for r in rows)


def test_best_of_n_command_samples_scores_and_reads_back(tmp_path, capsys):
    from b2b.config import get_profile
    from b2b.tools import overopt as T

    out = tmp_path / "bon"
    rec = T.run_bon(get_profile("ci"), out, n=4, n_prompts=3)["rm-level1"]
    assert [r["n"] for r in rec["curve"]] == [1, 2, 4] and rec["prompts"] == 3 and "sample" in rec["seconds"]
    samples = T.load_samples(out)
    assert samples["gold"].shape == (3, 4) and len(samples["texts"]) == 3 and len(samples["texts"][0]) == 4
    assert rec["curve"][0]["gold"] == pytest.approx(samples["gold"].double().mean().item())
    again = T.run_bon(get_profile("ci"), out, n=4, n_prompts=3)["rm-level1"]  # the samples are read back
    assert "sample" not in again["seconds"] and again["curve"] == rec["curve"]
    assert json.loads((out / "bon-rm-level1.json").read_text())["curve"] == rec["curve"]
    with pytest.raises(SystemExit):
        T.main(["bon", "--reward-model", "no-equals-sign"])


def test_ladder_trains_a_reward_model_per_size_and_reuses_the_samples(tmp_path):
    from b2b.config import get_profile
    from b2b.tools import overopt as T

    out = tmp_path / "ladder"
    recs = T.run_ladder(get_profile("ci"), out, pairs=(64,), n=2, n_prompts=2, say=lambda _: None)
    rec = recs["rm-64"]
    assert rec["reward_model_metrics"]["pairs"] == 64 and rec["reward_model_metrics"]["steps"] >= 1
    assert (out / "rm-64" / "config.json").exists() and (out / "bon-rm-64.json").exists()
    assert [r["n"] for r in rec["curve"]] == [1, 2]
    again = T.run_ladder(get_profile("ci"), out, pairs=(64,), n=2, n_prompts=2, say=lambda _: None)["rm-64"]
    assert again["curve"] == rec["curve"] and "sample" not in again["seconds"]  # model and samples read back


def test_scale_rows_read_the_records_and_fit_the_law(tmp_path, capsys):
    from b2b.tools import overopt as T

    d = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    for name, alpha in (("rm-1000", 1.0), ("rm-level1", 2.0)):
        gain = O.law("bon", d, alpha, 0.5).tolist()
        curve = [{"n": 2 ** i, "d": float(x), "gold": 5 + g, "gold_gain": g, "gold_lo": 4 + g, "gold_hi": 6 + g}
                 for i, (x, g) in enumerate(zip(d.tolist(), gain))]
        (tmp_path / f"bon-{name}.json").write_text(json.dumps({"reward_model": name, "curve": curve}))
    rows = T.scale_rows(tmp_path)
    assert [r["pairs"] for r in rows] == [1000, 100_000]
    assert rows[0]["alpha"] == pytest.approx(1.0) and rows[1]["r_star"] == pytest.approx(2.0 ** 2 / (4 * 0.5))
    assert rows[1]["peak_n"] == 16 and rows[1]["r2"] == pytest.approx(1.0)  # d* = alpha / (2 beta) = 2.0, the fifth point
    T.main(["table", "--dir", str(tmp_path)])
    assert capsys.readouterr().out.count("pairs") == 2


def test_standardise_puts_each_model_on_its_own_scale():
    s = torch.tensor([[[1.0, 3.0]], [[10.0, 30.0]]])  # 2 models x 1 prompt x 2 answers
    z = O.standardise(s, torch.tensor([2.0, 20.0]), torch.tensor([1.0, 10.0]))
    assert torch.equal(z, torch.tensor([[[-1.0, 1.0]], [[-1.0, 1.0]]]))


def test_rl_points_measure_from_the_first_evaluation():
    ev = [{"step": 0, "kl_ref": 0.01, "gold_mean": 5.0, "proxy_mean": 1.0},
          {"step": 25, "kl_ref": 4.0, "gold_mean": 6.5, "proxy_mean": 3.0},
          {"step": 50, "kl_ref": -0.5, "gold_mean": 4.0, "proxy_mean": 0.5}]  # a noisy negative estimate
    d, gold, proxy = O.rl_points(ev)
    assert d == pytest.approx([0.1, 2.0, 0.0]) and gold == [0.0, 1.5, -1.0] and proxy == [0.0, 2.0, -0.5]
    with pytest.raises(ValueError, match="first at step 0"):
        O.rl_points(ev[1:])


class _Head(torch.nn.Module):
    """A stand-in reward model: its 'score' is a fixed multiple of the answer's length."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([float(w)]))
        self.config = type("C", (), {"vocab_size": 10})()

    def rollout_scores(self, rollout, prompts=None):
        return (self.w * rollout.lengths.float()).unsqueeze(-1)


def test_ensemble_scores_a_rollout_standardised_and_combined():
    from types import SimpleNamespace

    from b2b.reward import rollout_reward_scores

    ro = SimpleNamespace(lengths=torch.tensor([1, 2, 3]))
    ens = O.Ensemble([_Head(1.0), _Head(-2.0)], mean=[2.0, -4.0], std=[1.0, 2.0], objective="worst")
    # member 0: (1, 2, 3) -> (-1, 0, 1); member 1: (-2, -4, -6) -> (1, 0, -1); worst: (-1, 0, -1)
    assert torch.equal(rollout_reward_scores(ens, ro), torch.tensor([[-1.0], [0.0], [-1.0]]))
    mean = O.Ensemble([_Head(1.0), _Head(-2.0)], mean=[2.0, -4.0], std=[1.0, 2.0], objective="mean")
    assert torch.equal(mean.rollout_scores(ro), torch.zeros(3, 1))
    from b2b.models import fingerprint
    assert fingerprint(ens) != fingerprint(mean)  # the objective is part of what a run record keys on
    with pytest.raises(ValueError, match="one mean and one positive std"):
        O.Ensemble([_Head(1.0), _Head(2.0)], mean=[0.0], std=[1.0, 1.0])
    with pytest.raises(ValueError, match="objective must be"):
        O.Ensemble([_Head(1.0), _Head(2.0)], mean=[0.0, 0.0], std=[1.0, 1.0], objective="median")


def test_rl_runs_read_a_record_and_fit_the_rl_law(tmp_path):
    import gzip

    from b2b.tools import overopt as T

    d = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    gain = O.law("rl", d, 1.0, 0.5).tolist()
    run = tmp_path / "rloo-k-4-no-kl-seed2"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"algo": "rloo", "kl_coef": 0.0, "seed": 2}))
    rows = [{"step": 25 * i, "kl_ref": x * x, "gold_mean": 5 + g, "proxy_mean": 1 + 2 * x}
            for i, (x, g) in enumerate(zip(d.tolist(), gain))]
    (run / "evals.jsonl.gz").write_bytes(gzip.compress("\n".join(map(json.dumps, rows)).encode()))
    [r] = T.rl_runs([run])
    assert (r["method"], r["seed"], r["algo"], r["kl_coef"]) == ("rloo-k-4-no-kl", 2, "rloo", 0.0)
    assert r["alpha"] == pytest.approx(1.0) and r["beta"] == pytest.approx(0.5) and r["r2"] == pytest.approx(1.0)
    assert r["d_star"] == pytest.approx(math.exp(1.0))
    with pytest.raises(FileNotFoundError, match="no evals.jsonl"):
        T.record_evals(tmp_path)


def test_ensemble_best_of_n_and_rl_against_the_ensemble(tmp_path):
    """The ensemble's records and an RL run that trains against it (2 members on 64 pairs, 2 steps, `ci`)."""
    from b2b.config import get_profile
    from b2b.tools import overopt as T

    ci, out, quiet = get_profile("ci"), tmp_path / "ens", (lambda _: None)
    rec = T.run_ensemble(ci, out, pairs=64, seeds=(0, 1), n=4, n_prompts=3, say=quiet)
    assert set(rec["curves"]) == {"seed0", "seed1", "mean", "worst", "uwo"}
    assert [m["name"] for m in rec["members"]] == ["rm-64", "rm-64-seed1"]
    assert rec["members"][0]["fingerprint"] != rec["members"][1]["fingerprint"]  # the seed changes the model
    s = T.load_samples(out)
    scores = torch.stack([T.member_scores(out / m["name"], s) for m in rec["members"]])
    z = (scores - scores.flatten(1).mean(1)[:, None, None]) / scores.flatten(1).std(1)[:, None, None]
    want = T.bon_curve(z.min(0).values, s["gold"])  # worst case of the standardised members, by hand
    assert [r["gold"] for r in rec["curves"]["worst"]] == pytest.approx([r["gold"] for r in want])
    ens = T.load_ensemble(out, 64, (0, 1), objective="worst")
    assert torch.allclose(ens.mean, scores.flatten(1).mean(1))
    runs = T.run_rl_ensemble(ci, out, pairs=64, seeds=(0, 1), steps=2, say=quiet)
    assert set(runs) == {"single", "worst"} and all(len(h.steps) == 2 for h in runs.values())
    assert runs["worst"].evals[0]["proxy_mean"] != runs["single"].evals[0]["proxy_mean"]  # another reward
    [row] = [r for r in T.rl_runs([out / "rl-worst-64"])]
    assert row["d"][0] == 0.0 and len(row["d"]) == len(runs["worst"].evals) == 2
    assert math.isnan(row["alpha"]) and row["d_star"] is None  # two points fit no law of two unknowns


def _run_row(name, d, gain, kl_coef=0.0):
    return {"run": name, "kl_coef": kl_coef, "d": list(d), "gold_gain": list(gain)}


def test_rl_vs_bon_compares_the_fitted_curves_over_the_shared_distances():
    from b2b.tools import overopt as T

    bon = {"d": [0.0, 1.0, 2.0], "alpha": 2.0, "beta": 0.5}
    low = {"d": [0.0, 3.0], "alpha": 1.0, "beta": 0.0}  # R_rl = d, below 2d - d^2/2 up to d = 2
    v = T.rl_vs_bon(low, bon)
    assert v["d_max"] == 2.0 and v["below"] and v["gap"] < 0
    high = {"d": [0.0, 1.0], "alpha": 3.0, "beta": 0.0}  # 3d, above bon's curve on (0, 1]
    assert not T.rl_vs_bon(high, bon)["below"] and T.rl_vs_bon(high, bon)["gap"] > 0


def test_kl_frontier_measures_penalised_runs_against_the_unpenalised_curve():
    from b2b.tools import overopt as T

    d = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    on = O.law("rl", d, 1.0, 0.5)
    without = [_run_row("a-seed0", d.tolist(), (on + 0.1 * (d > 0)).tolist()),
               _run_row("a-seed1", d.tolist(), (on - 0.1 * (d > 0)).tolist())]
    early = _run_row("b-seed0", d[:3].tolist(), on[:3].tolist(), 0.5)  # on the curve, stopped at d = 1
    better = _run_row("b-seed1", d[:3].tolist(), (on[:3] + 0.5 * (d[:3] > 0)).tolist(), 0.5)  # above it
    f = T.kl_frontier(without, [early, better])
    assert f["alpha"] == pytest.approx(1.0) and f["beta"] == pytest.approx(0.5)
    r_early, r_better = f["runs"]
    assert r_early["d_max"] == 1.0 and r_early["mean_residual"] == pytest.approx(0.0, abs=1e-9)
    assert r_early["own_residuals"] == pytest.approx([0.1, -0.1]) and r_early["spread"] == pytest.approx((-0.1, 0.1))
    assert r_early["on_frontier"] and not r_early["above"] and not r_better["on_frontier"] and r_better["above"]
    assert r_better["mean_residual"] == pytest.approx(0.5)


def test_the_lab_reads_the_shipped_records_by_default():
    from b2b.config import data_dir
    from b2b.tools import overopt as T

    assert T.lab() == data_dir() / "runs" / T.SHIPPED


def test_the_shipped_records_measure_every_claim_and_docs_match_them():
    from b2b.config import data_dir
    from b2b.tools import overopt as T

    rows = T.claims(data_dir() / "runs" / T.SHIPPED, data_dir() / "runs" / "showdown-tiny")
    assert [r["claim"] for r in rows] == [name for name, _ in O.CLAIMS]
    assert all(r["holds"] is not None for r in rows), [r for r in rows if r["holds"] is None]
    assert T.write_docs(check=True) == 0  # docs/results.md's section is the records' (python -m b2b.tools.overopt docs)
