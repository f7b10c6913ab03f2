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
    std = torch.tensor([math.sqrt(2 / 3), math.sqrt(8 / 3)])  # population std over the models
    assert torch.allclose(O.ensemble_score(s, "uwo", lam=0.5), torch.tensor([2.0, 2.0]) - 0.5 * std)
    with pytest.raises(ValueError, match="at least 2 models"):
        O.ensemble_score(s[:1])


def test_claims_are_fixed_and_named():
    assert [name for name, _ in O.CLAIMS] == ["interior_peak", "rl_below_bon", "fits", "peak_rises", "worst_case"]


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
