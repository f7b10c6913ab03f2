import statistics

import pytest


def test_pooled_evaluation_pools_every_sample_of_fixed_seeds(policy, tokenizer):
    from b2b.errors import ConfigError
    from b2b.evaluate import evaluate_policy
    from b2b.data import rl_prompts
    from b2b.config import get_profile
    from b2b.tools.showdown import POOLED_SEED, pooled_evaluation
    from b2b.rl_config import RLConfig

    prompts = rl_prompts(get_profile("ci"))[1][:6]
    cfg = RLConfig(max_new_tokens=12)
    res = pooled_evaluation(policy, tokenizer, None, prompts, cfg, True, 3, ref=policy)
    one = [evaluate_policy(policy, tokenizer, prompts, max_new_tokens=12, seed=POOLED_SEED + r) for r in range(3)]
    gold = [s["gold"] for e in one for s in e["samples"]]
    assert res["repeats"] == 3 and res["n"] == 18
    assert res["gold_by_repeat"] == [e["gold_mean"] for e in one]           # seeds 1000, 1001, 1002 in order
    assert len(set(res["gold_by_repeat"])) > 1                               # and they differ
    assert res["gold_mean"] == pytest.approx(statistics.fmean(gold))         # every sample, not a mean of means
    assert res["gold_se"] == pytest.approx(statistics.stdev(gold) / 18 ** 0.5)
    assert res["distinct_2"] == pytest.approx(statistics.fmean(e["distinct_2"] for e in one))
    assert res["kl_ref"] == pytest.approx(0.0, abs=1e-6) and "proxy_mean" not in res
    from b2b.tinyworld.gold import default_world

    fam = [default_world().spec(p).family for p in prompts] * 3
    for f, g in res["gold_by_family"].items():                              # each family's samples only
        assert g == pytest.approx(statistics.fmean(x for x, y in zip(gold, fam) if y == f))
    assert set(res["gold_by_family"]) == set(fam) and len(set(fam)) > 1
    again = pooled_evaluation(policy, tokenizer, None, prompts, cfg, True, 3)
    assert again["gold_mean"] == res["gold_mean"]                            # reproducible
    with pytest.raises(ConfigError, match="repeats: expected an integer >= 1, got 0"):
        pooled_evaluation(policy, tokenizer, None, prompts, cfg, True, 0)


def _row(method, seed, gold, d2=0.5, kl=1.0, sft_gold=5.0, pooled=None):
    r = {"method": method, "seed": seed, "samples": 64, "peak_gold_mean": gold, "median_step_s": 1.0,
         "sft": {"gold_mean": sft_gold, "distinct_2": 0.5, "proxy_mean": 0.0},
         "final": {"gold_mean": gold, "distinct_2": d2, "kl_ref": kl, "proxy_mean": 1.0}}
    if pooled is not None:  # (final gold, sft gold): the pooled evaluations
        r["final_pooled"] = {"gold_mean": pooled[0], "distinct_2": d2 + 0.1, "kl_ref": kl / 2, "n": 2048}
        r["sft_pooled"] = {"gold_mean": pooled[1], "distinct_2": 0.75, "kl_ref": 0.0, "n": 8192}
    return r


def test_claims_use_the_pooled_evaluations_when_every_run_has_them():
    from b2b.tools.showdown import aggregate, claims, markdown_table

    rows = [_row("vanilla REINFORCE", 0, 1.0, kl=20.0, pooled=(1.2, 4.8)),
            _row("RLOO k=4 + KL", 0, 6.6, d2=0.4, kl=2.0, pooled=(6.2, 4.8)),   # single: +1.6; pooled: +1.4
            _row("REINFORCE++", 0, 6.5, kl=1.5, pooled=(6.4, 4.8))]
    single, pooled = claims(rows, pooled=False), claims(rows)
    assert not single[0]["pooled"] and pooled[0]["pooled"]
    assert single[0]["RLOO: gold - SFT"] == pytest.approx(1.6) and single[0]["holds"]
    assert pooled[0]["RLOO: gold - SFT"] == pytest.approx(1.4) and not pooled[0]["holds"]
    assert pooled[0]["RLOO: distinct-2 / SFT"] == pytest.approx(0.5 / 0.75)
    assert pooled[0]["RLOO - vanilla: gold"] == pytest.approx(5.0)
    assert pooled[0]["RLOO KL / vanilla KL"] == pytest.approx(1.0 / 10.0)       # pooled KLs: halved in _row
    assert single[0]["RLOO KL / vanilla KL"] == pytest.approx(2.0 / 20.0)
    rows[0]["final_pooled"]["kl_ref"] = 4.0                                    # 1.0 / 4.0 > a fifth: missed
    assert not claims(rows)[0]["holds"] and claims(rows, pooled=False)[0]["holds"]
    rows[0]["final_pooled"]["kl_ref"] = 10.0
    assert pooled[0]["REINFORCE++: gold - SFT"] == pytest.approx(1.6)
    assert pooled[0]["REINFORCE++ KL / RLOO KL"] == pytest.approx(0.75)
    del rows[2]["final_pooled"]                                                # one run lacks it: all single
    assert not claims(rows)[0]["pooled"] and claims(rows)[0]["RLOO: gold - SFT"] == pytest.approx(1.6)

    rows = [_row("RLOO k=4 + KL", 0, 6.6, pooled=(6.2, 4.8)), _row("RLOO k=4 + KL", 1, 6.0, pooled=(6.4, 4.8))]
    agg = aggregate(rows)[0]
    assert agg["gold_pooled"] == pytest.approx(6.3) and agg["gold_gain_pooled"] == pytest.approx(1.5)
    assert agg["gold_gain"] == pytest.approx(1.3) and agg["kl_pooled"] == pytest.approx(0.5)
    table = markdown_table([agg])
    assert "gold gain vs SFT, pooled" in table and "| 6.30 ± 0.42 | 6.30 ± 0.14 | +1.50 ± 0.14 |" in table
    assert "| 1.00 ± 0.00 | 0.5 ± 0.0 | 0.80 ± 0.00 | n/a | n/a |" in table      # proxy, pooled KL, distinct-2
    del rows[1]["final_pooled"]
    assert "pooled" not in markdown_table(aggregate(rows))                    # not every run: the single column


def test_claims_without_reinforce_pp_report_the_rest_and_mark_its_two_na():
    from b2b.tools.showdown import claims, claims_table

    rows = [_row("vanilla REINFORCE", 0, 1.0, kl=20.0, pooled=(1.2, 4.8)),
            _row("RLOO k=4 + KL", 0, 6.6, d2=0.5, kl=2.0, pooled=(6.8, 4.8)),
            _row("vanilla REINFORCE", 1, 6.0, kl=20.0, pooled=(6.0, 4.8)),
            _row("RLOO k=4 + KL", 1, 6.6, d2=0.5, kl=2.0, pooled=(6.9, 4.8)),
            _row("REINFORCE++", 1, 6.5, kl=30.0, pooled=(6.4, 4.8))]               # KL / RLOO's: 15, missed
    c0, c1 = claims(rows)
    assert c0["REINFORCE++: gold - SFT"] is None and c0["REINFORCE++ KL / RLOO KL"] is None
    assert c0["holds"] and not c0["complete"] and c0["RLOO - vanilla: gold"] == pytest.approx(5.6)
    assert not c1["holds"] and c1["complete"] and c1["REINFORCE++ KL / RLOO KL"] == pytest.approx(15.0)
    table = claims_table([c0, c1])
    assert "| 0 | 2.00 | 0.80 | 5.60 | 0.10 | n/a | n/a |" in table
    assert "| 1 | 2.10 | 0.80 | 0.90 | 0.10 | 1.60 | 15.00 (missed) |" in table
    assert "| mean | 2.05 | 0.80 | 3.25 | 0.10 | 1.60 | 15.00 (missed) |" in table   # the mean of those there
    assert claims([r for r in rows if r["method"] != "vanilla REINFORCE"]) == []     # RLOO alone: nothing to check
    # a run that did not move (the smoke profiles' single step): a KL of 0 below a ratio is n/a, or inf above one
    still = [_row("vanilla REINFORCE", 0, 5.0, kl=0.0), _row("RLOO k=4 + KL", 0, 5.0, kl=0.0),
             _row("REINFORCE++", 0, 5.0, kl=0.1)]
    (c,) = claims(still, pooled=False)
    assert c["RLOO KL / vanilla KL"] is None and c["REINFORCE++ KL / RLOO KL"] == float("inf") and not c["holds"]
    assert "n/a" in claims_table([c])


def test_pooled_caches_are_read_back_only_for_the_same_key(tmp_path):
    from b2b.tools.showdown import _cached_json

    calls = []
    compute = lambda: calls.append(1) or {"gold_mean": float(len(calls))}  # noqa: E731
    f = tmp_path / "final_pooled.json"
    assert _cached_json(f, {"config": {"kl_coef": 0.5}}, compute) == {"gold_mean": 1.0}
    assert _cached_json(f, {"config": {"kl_coef": 0.5}}, compute) == {"gold_mean": 1.0} and len(calls) == 1
    assert _cached_json(f, {"config": {"kl_coef": 1.0}}, compute) == {"gold_mean": 2.0}  # another run: again


def test_fingerprint_tells_reward_models_apart(data_dir):
    import copy

    import torch

    from b2b.models import fingerprint, load_reward_model

    rm = load_reward_model(data_dir / "rm-level1")
    same = copy.deepcopy(rm)
    assert fingerprint(rm) == fingerprint(same) and len(fingerprint(rm)) == 16
    with torch.no_grad():
        next(same.parameters()).view(-1)[0] += 1e-3                           # one weight, slightly
    assert fingerprint(same) != fingerprint(rm)
    assert fingerprint(lambda prompts, responses: [0.0] * len(prompts)) is None


def test_cached_runs_are_reused_only_under_the_same_reward_model(tmp_path, tokenizer, data_dir):
    """A finished run is read back for the reward model it trained against and trained again,
    from scratch, for another one (a rebuilt data/rm-level1 must not reuse stale runs)."""
    import copy
    import json

    import torch

    from b2b.config import get_profile
    from b2b.models import fingerprint, load_reward_model
    from b2b.data import rl_prompts
    from b2b.tools.showdown import cached_run, run_reward_fingerprint
    from b2b.rl_config import RLConfig
    from b2b.runs import REWARD_FILE

    profile = get_profile("ci")
    prompts, heldout, world = rl_prompts(profile)
    data = (prompts, heldout[:4], world)
    cfg = RLConfig(steps=2, batch_size=4, max_new_tokens=8, eval_every=0, sample_every=0, seed=0)
    rm = load_reward_model(data_dir / "rm-level1")
    other = copy.deepcopy(rm)
    with torch.no_grad():
        other.score.weight.mul_(-1.0)                                         # the opposite taste
    out = tmp_path / "run"

    first = cached_run(profile, cfg, out, tokenizer, rm, data, progress=False)
    assert run_reward_fingerprint(out) == fingerprint(rm)
    assert json.loads((out / REWARD_FILE).read_text()) == {"fingerprint": fingerprint(rm)}
    stamp = (out / "metrics.jsonl").stat().st_mtime_ns
    again = cached_run(profile, cfg, out, tokenizer, rm, data, progress=False)
    assert again == first and (out / "metrics.jsonl").stat().st_mtime_ns == stamp    # read back

    retrained = cached_run(profile, cfg, out, tokenizer, other, data, progress=False)
    assert run_reward_fingerprint(out) == fingerprint(other)
    assert (out / "metrics.jsonl").stat().st_mtime_ns != stamp
    proxy = lambda h: h.steps[0]["reward/proxy_mean"]  # noqa: E731  (step 1: the same samples, scored by each)
    assert proxy(retrained) == pytest.approx(-proxy(first), rel=1e-4, abs=1e-5) and proxy(first) != 0

    (out / REWARD_FILE).unlink()                                              # a run from before the record
    cached_run(profile, cfg, out, tokenizer, other, data, progress=False)
    assert run_reward_fingerprint(out) == fingerprint(other)


def test_sft_pooled_is_keyed_by_the_policy_weights_not_its_path(tmp_path, monkeypatch, tiny_dir, data_dir):
    """The SFT evaluation is read back for the same weights at another path (a copied checkout)
    and computed again for other weights at the same path (a retrained SFT policy)."""
    import dataclasses
    import shutil

    import torch

    import b2b.tools.showdown as sd
    from b2b.config import get_profile
    from b2b.models import fingerprint, load_policy, load_reward_model

    calls = []
    monkeypatch.setattr(sd, "pooled_evaluation", lambda *a, **k: calls.append(1) or {"gold_mean": float(len(calls))})
    rm = load_reward_model(data_dir / "rm-level1")
    moved = tmp_path / "elsewhere" / "tiny-sft"
    shutil.copytree(tiny_dir, moved)
    profile = get_profile("ci")
    copy = dataclasses.replace(profile, policy=str(moved))
    out = tmp_path / "runs"

    assert sd.sft_pooled(profile, out, repeats=1, reward_model=rm) == {"gold_mean": 1.0}
    assert sd.sft_pooled(copy, out, repeats=1, reward_model=rm) == {"gold_mean": 1.0} and len(calls) == 1
    changed = load_policy(str(moved))
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    changed.save_pretrained(moved)
    assert fingerprint(load_policy(str(moved))) != fingerprint(load_policy(str(tiny_dir)))
    assert sd.sft_pooled(copy, out, repeats=1, reward_model=rm) == {"gold_mean": 2.0}    # computed again


def test_update_stats_count_updates_and_clipped_gradients(tmp_path):
    import json

    from b2b.rl_config import RLConfig
    from b2b.tools.showdown import aggregate, markdown_table, update_stats

    d = tmp_path / "run"
    d.mkdir()
    assert update_stats(RLConfig(), d) == {}                                   # no log: nothing to say
    rows = [{"step": 1, "grad_norm": 30.0, "grad/clipped_frac": 1.0}, {"step": 2, "grad_norm": 0.4, "grad/clipped_frac": 0.5},
            {"step": 3, "grad_norm": 2.0},                                     # an older log: grad_norm > max_grad_norm
            {"step": 4, "grad_norm": 0.5}, {"step": 5, "grad_norm": 99.0}]     # step 5 is past cfg.steps
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = update_stats(RLConfig(steps=4), d)
    assert s == {"updates": 1, "clipped_share": pytest.approx((1 + 0.5 + 1 + 0) / 4), "grad_norm_median": 1.25}
    pp = update_stats(RLConfig(algo="reinforce_pp", steps=4, ppo_epochs=2, minibatches=2, max_grad_norm=10.0), d)
    assert pp["updates"] == 4 and pp["clipped_share"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    row = {**_row("GRPO", 0, 6.0), **s}
    table = markdown_table(aggregate([row]))
    assert "| updates / batch | clipped updates |" in table and "| 1 | 62% |" in table


def test_train_missing_false_reads_back_what_is_there_and_trains_nothing(tmp_path, monkeypatch, capsys):
    """A notebook that shows the shipped records: a cell with neither a finished run nor a record
    is named and left out, never trained."""
    from b2b.config import get_profile
    from b2b.tools import showdown as S

    profile = get_profile("ci")
    monkeypatch.setattr(S, "cached_run", lambda *a, **k: pytest.fail("trained a missing cell"))
    rows = S.run_showdown(profile, seeds=(0, 1), methods=["vanilla REINFORCE", "GRPO"], out=tmp_path / "runs" / "sd",
                          final_evals=0, train_missing=False)
    assert rows == []
    line = capsys.readouterr().out
    assert "not trained here (4 cells" in line and "GRPO seed 1" in line and "vanilla REINFORCE seed 0" in line


def test_the_showdown_plot_keeps_its_legend_off_the_runs_and_every_run_inside():
    """The legend sits outside both axes (it covers no run), the axes reach past the largest KL,
    and the title says a diamond is each method's mean over its own seeds (a method may have fewer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from b2b.tools.showdown import plot_showdown

    rows = [_row("A", 0, 6.0, kl=2.0), _row("A", 1, 6.2, kl=3.0), _row("B", 0, 2.0, kl=190.0)]
    fig = plot_showdown(rows)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["A", "B", "SFT policy"]
    assert all(ax.get_xlim()[1] > 190.0 for ax in fig.axes)
    assert "mean over its seeds" in fig._suptitle.get_text()
    plt.close(fig)
