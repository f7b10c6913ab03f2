"""Reward-model losses and readouts on hand-made tensors."""
import math
from pathlib import Path

import pytest
import torch

from b2b.reward import (bradley_terry_loss, expected_class, ordinal_loss, pair_loss, prob_at_least,
                        scalar_reward)


def _dist(*probs):
    return torch.tensor([probs]).log()  # logits whose softmax is `probs`


def test_bradley_terry_by_hand():
    assert math.isclose(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), math.log(2), rel_tol=1e-6)
    # margin 2: -log sigmoid(2) = log(1 + e^-2)
    assert math.isclose(bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0])).item(), math.log1p(math.exp(-2)), rel_tol=1e-6)
    right = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([-1.0]))
    wrong = bradley_terry_loss(torch.tensor([-1.0]), torch.tensor([2.0]))
    assert right < wrong
    # stable for huge margins (no inf, no nan)
    assert bradley_terry_loss(torch.tensor([-1e4]), torch.tensor([1e4])).item() == pytest.approx(2e4)
    assert bradley_terry_loss(torch.tensor([1e4]), torch.tensor([-1e4])).item() == 0.0


def test_ordinal_loss_by_hand_and_mask_direction():
    """Two classes of ten used: winner in class 8 w.p. 0.9 (else 3), loser in class 3 w.p. 0.6 (else 8).
    P(winner's class > loser's) = 0.9 * 0.6 = 0.54; `triu` (the seed's bug) would give 0.1 * 0.4."""
    pw = [0.0] * 10
    pw[7], pw[2] = 0.9, 0.1
    pl = [0.0] * 10
    pl[2], pl[7] = 0.6, 0.4
    lw, ll = _dist(*pw), _dist(*pl)
    assert ordinal_loss(lw, ll).item() == pytest.approx(-math.log(0.54), rel=1e-5)
    assert ordinal_loss(ll, lw).item() == pytest.approx(-math.log(0.4 * 0.1), rel=1e-5)


def test_ordinal_loss_is_minimised_by_a_higher_winner_class():
    losses = []
    for k in range(10):
        w = torch.full((1, 10), -20.0)
        w[0, k] = 20.0
        l = torch.full((1, 10), -20.0)
        l[0, 4] = 20.0
        losses.append(ordinal_loss(w, l).item())
    assert all(losses[k] > 10 for k in range(5)), "winner at or below the loser's class: near-impossible event"
    assert all(losses[k] < 1e-6 for k in range(5, 10)), "winner above the loser: loss ~ 0"


def test_ordinal_loss_uniform_and_equal_classes():
    u = torch.zeros(1, 10)
    assert ordinal_loss(u, u).item() == pytest.approx(-math.log(45 / 100), rel=1e-6)  # 45 of 100 pairs have i > j
    # 45/100 holds under either mask direction; an asymmetric pair tells them apart: a uniform
    # winner against a loser sure of class 2 is above it in 8 classes of 10 (below it in 1)
    low = torch.full((1, 10), -1e9)
    low[0, 1] = 0.0
    assert ordinal_loss(u, low).item() == pytest.approx(-math.log(0.8), rel=1e-6)
    assert ordinal_loss(low, u).item() == pytest.approx(-math.log(0.1), rel=1e-6)


def test_pair_losses_aggregate_by_the_mean():
    """A batch of three different pairs: the loss is the mean of the per-pair losses (not their
    sum, not a mean over another axis), for both levels and through pair_loss."""
    rc, rr = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.5, 1.0])
    per_pair = [math.log1p(math.exp(-(c - r))) for c, r in zip(rc.tolist(), rr.tolist())]
    assert bradley_terry_loss(rc, rr).item() == pytest.approx(sum(per_pair) / 3, rel=1e-6)
    assert pair_loss(rc[:, None], rr[:, None]).item() == pytest.approx(sum(per_pair) / 3, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    lw, ll = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
    pw, pl = lw.softmax(-1), ll.softmax(-1)
    p_above = [sum(pw[b, i] * pl[b, j] for i in range(10) for j in range(i)).item() for b in range(3)]
    want = sum(-math.log(p) for p in p_above) / 3
    assert ordinal_loss(lw, ll).item() == pytest.approx(want, rel=1e-5)
    assert pair_loss(lw, ll).item() == pytest.approx(want, rel=1e-5)
    x = lw.clone().requires_grad_(True)
    ordinal_loss(x, ll).backward()
    x1 = lw[:1].clone().requires_grad_(True)
    ordinal_loss(x1, ll[:1]).backward()
    assert torch.allclose(x.grad[0], x1.grad[0] / 3, atol=1e-6)           # each pair weighs 1/B


def test_ordinal_loss_is_stable_in_log_space():
    w = torch.full((3, 10), -1e4)
    w[:, 9] = 1e4
    l = torch.full((3, 10), -1e4)
    l[:, 0] = 1e4
    assert ordinal_loss(w, l).item() == pytest.approx(0.0, abs=1e-6)
    bad = ordinal_loss(l, w)  # certain to be wrong: large but finite, with finite gradients
    assert torch.isfinite(bad) and bad.item() > 1e3
    x = l.clone().requires_grad_(True)
    ordinal_loss(x, w).backward()
    assert torch.isfinite(x.grad).all()


def test_gradients_push_the_right_way():
    rc, rr = torch.zeros(4, 1, requires_grad=True), torch.zeros(4, 1, requires_grad=True)
    pair_loss(rc, rr).backward()
    assert (rc.grad < 0).all() and (rr.grad > 0).all()  # descent raises chosen, lowers rejected
    lc, lr = torch.zeros(2, 10, requires_grad=True), torch.zeros(2, 10, requires_grad=True)
    pair_loss(lc, lr).backward()
    assert (lc.grad[:, -1] < 0).all() and (lc.grad[:, 0] > 0).all()  # winner's mass moves up
    assert (lr.grad[:, 0] < 0).all() and (lr.grad[:, -1] > 0).all()  # loser's mass moves down


def test_readouts():
    sure7 = torch.full((1, 10), -1e9)
    sure7[0, 6] = 0.0
    assert expected_class(sure7).item() == pytest.approx(7.0)
    assert prob_at_least(sure7, 7).item() == pytest.approx(1.0)
    assert prob_at_least(sure7, 8).item() == pytest.approx(0.0)
    assert expected_class(torch.zeros(1, 10)).item() == pytest.approx(5.5)
    assert prob_at_least(torch.zeros(1, 10), 7).item() == pytest.approx(0.4)
    assert scalar_reward(sure7, "p7").item() == pytest.approx(1.0)
    assert scalar_reward(torch.tensor([[1.5]])).item() == 1.5


def test_readouts_on_batches_and_their_defaults():
    """Batches of several rows: one number per row, the defaults are the documented ones."""
    sure = torch.full((3, 10), -1e9)
    for row, cls in enumerate((6, 7, 2)):                    # classes 7, 8, 3
        sure[row, cls] = 0.0
    assert torch.allclose(expected_class(sure), torch.tensor([7.0, 8.0, 3.0]))
    assert torch.allclose(prob_at_least(sure), torch.tensor([1.0, 1.0, 0.0]))          # default k = 7
    assert torch.allclose(prob_at_least(sure, 8), torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(scalar_reward(sure), expected_class(sure))                    # default: expected
    assert torch.allclose(scalar_reward(sure, "p7"), torch.tensor([1.0, 1.0, 0.0]))     # P(class >= 7)
    # (B, T, K) logits: expected_class reads the last axis
    assert torch.allclose(expected_class(sure[None].expand(2, 3, 10)), torch.tensor([[7.0, 8.0, 3.0]] * 2))
    bt = torch.tensor([[1.5], [-2.0]])
    assert scalar_reward(bt).shape == (2,) and torch.allclose(scalar_reward(bt), torch.tensor([1.5, -2.0]))
    assert scalar_reward(torch.zeros(2, 10, dtype=torch.float16)).dtype == torch.float32
    with pytest.raises(ValueError, match="readout: expected one of expected, p7, got 'mean'"):
        scalar_reward(sure, "mean")


def test_encode_responses_matches_rollout_ids(tokenizer, policy):
    """Reward-model inputs are built exactly like rollouts: template prompt, response, <|im_end|>."""
    from b2b.reward import encode_responses
    from b2b.rollout import decode_completions, sample_completions

    prompts = ["What colour is a banana?", "Hello!"]
    ro = sample_completions(policy, tokenizer, prompts, 32, 1.0, torch.Generator().manual_seed(0))
    texts = decode_completions(tokenizer, ro)
    ids = encode_responses(tokenizer, prompts, texts)
    for i in range(2):
        want = ro.input_ids[i][ro.attention_mask[i].bool()].tolist()
        if ro.finished(tokenizer.eos_token_id)[i]:
            assert ids[i] == want


def test_short_training_moves_parameters_and_beats_chance(tokenizer, tiny_dir, data_dir):
    from b2b.data import load_preferences
    from b2b.models import load_reward_model
    from b2b.reward import RewardConfig, pair_accuracy, train_reward_model

    pairs = load_preferences(data_dir, "train", limit=256)
    torch.manual_seed(0)
    rm = load_reward_model(tiny_dir, num_labels=1)
    before = [p.detach().clone() for p in rm.parameters()]
    cfg = RewardConfig(level=1, epochs=6, batch_size=32, lr=1e-3, warmup=5, eval_every=10**6)
    hist = train_reward_model(rm, tokenizer, pairs, cfg, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, rm.parameters()))
    first = sum(h["loss"] for h in hist[:5]) / 5
    last = sum(h["loss"] for h in hist[-5:]) / 5
    assert last < first - 0.1
    assert pair_accuracy(rm, tokenizer, pairs) > 0.75  # it can fit what it saw


def test_run_only_reward_model_json_contract(tmp_path):
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "b2b", "run", "--level", "2", "--only-reward-model", "--profile", "ci",
                        "--epochs", "0.2", "--out", str(tmp_path / "rm"), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("pair_accuracy", "gold_accuracy", "gold_spearman", "length_corr", "train_seconds"):
        assert isinstance(m[key], float), key
    assert (tmp_path / "rm" / "model.safetensors").exists()
    r = subprocess.run([sys.executable, "-m", "b2b", "run", "--only-reward-model", "--skip-reward-training",
                        "--profile", "ci"], capture_output=True, text=True)
    assert r.returncode == 2 and "exclude each other" in r.stderr and "Traceback" not in r.stderr


def test_win_probability_by_hand():
    from b2b.reward import win_probability

    # Bradley-Terry: sigmoid of the margin
    p = win_probability(torch.tensor([[2.0], [0.0], [1.0]]), torch.tensor([[0.0], [0.0], [3.0]]))
    assert torch.allclose(p, torch.tensor([1 / (1 + math.exp(-2)), 0.5, 1 / (1 + math.exp(2))]))
    # a batch: one probability per pair; winner sure of class 3, loser sure of class 2 (3 > 2, not
    # by two), and a tie counted as half
    w3, l2, l3 = (torch.full((1, 10), -1e9).index_fill(1, torch.tensor([c]), 0.0) for c in (2, 1, 2))
    both = win_probability(torch.cat([w3, w3]), torch.cat([l2, l3]))
    assert both.shape == (2,) and torch.allclose(both, torch.tensor([1.0, 0.5]))
    # ordinal: winner in 8 w.p. 0.9 (else 3), loser in 3 w.p. 0.6 (else 8):
    # P(w > l) = 0.9 * 0.6 = 0.54, P(tie) = 0.9 * 0.4 + 0.1 * 0.6 = 0.42 -> 0.54 + 0.21
    pw, pl = [1e-9] * 10, [1e-9] * 10
    pw[7], pw[2], pl[2], pl[7] = 0.9, 0.1, 0.6, 0.4
    assert win_probability(_dist(*pw), _dist(*pl)).item() == pytest.approx(0.75, abs=1e-6)
    assert win_probability(_dist(*pl), _dist(*pw)).item() == pytest.approx(0.25, abs=1e-6)


def test_calibration_bins_and_ece():
    from b2b.metrics import calibration

    rows, ece = calibration([0.15, 0.15, 0.85, 0.85], [False, False, True, False], n_bins=10)
    assert [(r["n"], r["observed"]) for r in rows] == [(2, 0.0), (2, 0.5)]
    assert ece == pytest.approx(0.5 * 0.15 + 0.5 * 0.35)
    assert calibration([0.3, 0.7], [False, True], 2)[1] == pytest.approx(0.3)


def test_exercise_checks_catch_the_classic_mistakes(capsys):
    from b2b.exercises import check_bradley_terry, check_ordinal

    assert check_bradley_terry(bradley_terry_loss)
    assert check_ordinal(ordinal_loss)
    naive = lambda rw, rl: -torch.log(torch.sigmoid(rw - rl)).mean()  # noqa: E731 (inf for huge margins)
    assert not check_bradley_terry(naive)
    flipped = lambda rw, rl: -torch.nn.functional.logsigmoid(rl - rw).mean()  # noqa: E731
    assert not check_bradley_terry(flipped)

    def triu(lw, ll):  # the seed's mask: sums P(loser above winner)
        joint = lw.log_softmax(-1)[:, :, None] + ll.log_softmax(-1)[:, None, :]
        mask = torch.ones(10, 10, dtype=torch.bool).triu(diagonal=1)
        return -joint.masked_fill(~mask, float("-inf")).logsumexp((1, 2)).mean()

    def products(lw, ll):  # log of a sum of probabilities: underflows for sharp logits
        joint = lw.softmax(-1)[:, :, None] * ll.softmax(-1)[:, None, :]
        return -torch.log(joint.tril(-1).sum((1, 2)) + 1e-8).mean()

    assert not check_ordinal(triu)
    assert not check_ordinal(products)
    assert "x " in capsys.readouterr().out


def test_bias_probe_measures_filler_and_padding(tokenizer, tiny_dir):
    from b2b.models import load_reward_model
    from b2b.reward_eval import bias_probe, filler_gain
    from b2b.tinyworld.world import World

    torch.manual_seed(0)
    rm = load_reward_model(tiny_dir, num_labels=1)
    rows = bias_probe(rm, tokenizer, World(), n_prompts=16, max_added=3)
    assert [(r["kind"], r["added"]) for r in rows] == [("plain", 0)] + [("filler", k) for k in (1, 2, 3)] + \
        [("padding", k) for k in (1, 2, 3)]
    assert rows[0]["reward_delta"] == 0.0 and rows[0]["gold_delta"] == 0.0
    gold = {(r["kind"], r["added"]): r["gold_delta"] for r in rows}
    # gold: one polite phrase costs nothing (at most the clean bonus), more cost 0.8 each
    assert gold[("filler", 3)] < gold[("filler", 2)] < gold[("filler", 1)] <= 0
    assert gold[("padding", 3)] < 0
    assert math.isfinite(filler_gain(rows, 1.0))


def test_pair_calibration_counts_both_orders():
    from b2b.reward_eval import binned_means, pair_calibration

    rows, ece = pair_calibration([0.9, 0.9, 0.9, 0.1], n_bins=2)
    # orders: p = .9 x3 won, .1 won, and .1 x3 lost, .9 lost -> bin [.5, 1]: 3 of 4 won at 0.9
    assert rows == [{"predicted": pytest.approx(0.1), "observed": 0.25, "n": 4},
                    {"predicted": pytest.approx(0.9), "observed": 0.75, "n": 4}]
    assert ece == pytest.approx(0.15)
    bins = binned_means([{"gold": g, "reward": r} for g, r in [(1, 0.0), (1.5, 1.0), (1.2, 2.0), (10, 5.0)]], min_count=1)
    assert [(lo, m) for lo, m, _ in bins] == [(1, 1.0), (9, 5.0)]


def test_trl_reward_trainer_bridge_trains_and_scores(tiny_dir, data_dir):
    from b2b.data import load_preferences
    from b2b.models import load_reward_model
    from b2b.reward import RewardConfig
    from b2b.tools.trl_bridge import trl_reward_model

    pairs = load_preferences(data_dir, "train", limit=96)
    before = load_reward_model(tiny_dir, num_labels=1).model.embed_tokens.weight.detach().clone()
    out = trl_reward_model(tiny_dir, pairs[:64], pairs[64:], RewardConfig(epochs=1, batch_size=16, warmup=1))
    assert 0.0 <= out["pair_accuracy"] <= 1.0 and out["train_seconds"] > 0
    assert not torch.equal(before, out["model"].model.embed_tokens.weight)
    assert out["model"].config.num_labels == 1
    with pytest.raises(ValueError, match="level 1"):
        trl_reward_model(tiny_dir, pairs, pairs, RewardConfig(level=2))
    # what fits a T4 (issue: the TRL cross-check at colab size): micro-batches of the step's pairs with
    # their gradients accumulated, and activation checkpointing, through TRL's own settings: the same
    # training up to float rounding, in the same number of optimizer steps
    small = trl_reward_model(tiny_dir, pairs[:64], pairs[64:], RewardConfig(epochs=1, batch_size=16, warmup=1,
                                                                          micro_batch_size=4, gradient_checkpointing=True))
    assert small["model"].model.embed_tokens.weight.shape == out["model"].model.embed_tokens.weight.shape
    assert max(e.get("step", 0) for e in small["log"]) == max(e.get("step", 0) for e in out["log"]) == 4
    for (name, a), b in zip(out["model"].named_parameters(), small["model"].parameters()):
        assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), name
    assert not torch.equal(before, small["model"].model.embed_tokens.weight)
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        trl_reward_model(tiny_dir, pairs, pairs, RewardConfig(batch_size=16, micro_batch_size=5))


@pytest.mark.parametrize("level,name", [(1, "rm-level1"), (2, "rm-level2")])
def test_shipped_reward_models_load_fast_and_rank_held_out_pairs(level, name, data_dir):
    import json
    import time

    from b2b.data import load_preferences
    from b2b.models import load_reward_model, load_tokenizer
    from b2b.reward import pair_accuracy

    t0 = time.time()
    rm, tok = load_reward_model(data_dir / name), load_tokenizer(data_dir / name)
    assert time.time() - t0 < 20  # notebooks 03+ load these instead of training
    assert rm.config.num_labels == (1 if level == 1 else 10)
    assert pair_accuracy(rm, tok, load_preferences(data_dir, "test", limit=300)) > 0.7
    m = json.loads((data_dir / name / "b2b_metrics.json").read_text())
    assert m["level"] == level and m["train_pairs"] == 100_000


def test_spearman_by_family():
    from b2b.reward_eval import spearman_by_family

    rows = [{"prompt": "What colour is a banana?", "reward": r, "gold": g} for r, g in [(1, 2), (2, 3), (3, 9)]] + \
           [{"prompt": "Which is bigger, a horse or a mouse?", "reward": r, "gold": g} for r, g in [(1, 9), (2, 5), (3, 1)]]
    out = spearman_by_family(rows)
    assert out["colour"] == (3, pytest.approx(1.0)) and out["compare"] == (3, pytest.approx(-1.0))


def test_reward_model_for_loads_the_shipped_model_of_the_same_recipe(tmp_path, monkeypatch, tokenizer, data_dir):
    """Notebooks 01-02 load the shipped model and its recorded curve when it was trained by exactly
    their recipe, and train one otherwise (another setting, other data, or retrain=True)."""
    import dataclasses
    import json
    import shutil

    from b2b import reward_models
    from b2b.config import get_profile
    from b2b.data import load_preferences
    from b2b.models import fingerprint, load_reward_model
    from b2b.reward import RewardConfig

    profile = get_profile("ci")
    shipped = tmp_path / "rm-level1"
    shutil.copytree(data_dir / "rm-level1", shipped)
    monkeypatch.setattr(reward_models, "shipped_reward_model", lambda p, level: shipped)
    pairs = load_preferences(data_dir, "test", limit=16)
    cfg = RewardConfig(level=1, epochs=1, batch_size=4, warmup=1, eval_every=0, limit=8)
    curve = [{"step": 1, "loss": 0.7, "accuracy": 0.5}]
    record = reward_models.training_record(cfg, profile.reward_backbone, 8, curve)
    assert record["backbone"] == "tiny-sft"                               # not the clone's absolute path
    (shipped / reward_models.TRAINING_RECORD).write_text(json.dumps(record))

    rm, history, source = reward_models.reward_model_for(profile, cfg, tokenizer, pairs, progress=False)
    assert Path(source).resolve() == shipped.resolve() and history == curve
    assert fingerprint(rm) == fingerprint(load_reward_model(shipped))
    for kw in ({"cfg": dataclasses.replace(cfg, lr=1e-3)}, {"retrain": True},
               {"train_pairs": pairs[:6]}, {"cfg": dataclasses.replace(cfg, level=2)}):
        args = {"cfg": cfg, "train_pairs": pairs, "retrain": False, **kw}
        rm2, history2, source2 = reward_models.reward_model_for(profile, args["cfg"], tokenizer, args["train_pairs"],
                                                           retrain=args["retrain"], progress=False)
        assert source2 == "trained" and history2 != curve and len(history2) >= 1, kw
        assert rm2.config.num_labels == args["cfg"].num_labels and fingerprint(rm2) != fingerprint(rm)


def test_build_reward_models_writes_the_recipe_beside_each_model(tmp_path, monkeypatch):
    import json

    from b2b import recipes, reward_models
    from b2b.tools.cli import main
    from b2b.config import get_profile

    def fake_stage(profile, level, data, out, cfg=None, half=False):
        out.mkdir(parents=True)
        return None, None, {"level": level, "train_pairs": 100_000}, [{"step": 1, "loss": 0.6}], []
    monkeypatch.setattr(reward_models, "reward_stage", fake_stage)
    assert main(["build-reward-models", "--data", str(tmp_path), "--level", "2"]) == 0
    record = json.loads((tmp_path / "rm-level2" / reward_models.TRAINING_RECORD).read_text())
    want = reward_models.training_record(recipes.reward_config(get_profile("tiny"), 2), "tiny-sft", 100_000,
                                    [{"step": 1, "loss": 0.6}])
    assert record == want and record["config"]["epochs"] == 2.0
    assert json.loads((tmp_path / "rm-level2" / "b2b_metrics.json").read_text())["level"] == 2
    assert not (tmp_path / "rm-level1").exists()


@pytest.mark.parametrize("num_labels", [1, 10])
def test_micro_batches_and_checkpointing_give_the_whole_batch_gradient(num_labels, tokenizer, tiny_dir, data_dir):
    """6 pairs as one batch, as micro-batches of 4 + 2 (each weighted by its share of the pairs, not
    by 1/2), and with gradient checkpointing: the same loss and the same gradient."""
    from b2b.data import load_preferences
    from b2b.models import checkpointing as set_checkpointing, load_reward_model
    from b2b.reward import accumulated_pair_loss, encode_pairs

    pairs = load_preferences(str(data_dir), "train")[:6]
    chosen, rejected = encode_pairs(tokenizer, pairs, 512)
    torch.manual_seed(0)
    rm = load_reward_model(tiny_dir, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
    rm.train()

    def grads(micro, checkpointing=False):
        if checkpointing:
            set_checkpointing(rm)
        rm.zero_grad(set_to_none=True)
        loss, sc, sr = accumulated_pair_loss(rm, chosen, rejected, tokenizer.pad_token_id, "cpu", micro)
        if checkpointing:
            set_checkpointing(rm, on=False)
        assert sc.shape == sr.shape == (6, num_labels) and not sc.requires_grad
        return loss, torch.cat([p.grad.flatten() for p in rm.parameters() if p.grad is not None])

    loss, g = grads(None)
    for micro, ckpt in ((4, False), (1, False), (4, True)):
        loss_m, g_m = grads(micro, ckpt)
        assert loss_m.item() == pytest.approx(loss.item(), rel=1e-5)
        assert torch.allclose(g_m, g, rtol=1e-4, atol=1e-7), (micro, ckpt)


@pytest.mark.parametrize("field,value", [("micro_batch_size", 0), ("micro_batch_size", 2.5),
                                         ("gradient_checkpointing", "yes")])
def test_reward_config_checks_the_memory_settings(field, value):
    from b2b.errors import ConfigError
    from b2b.reward import RewardConfig

    with pytest.raises(ConfigError, match=f"field 'reward.{field}'"):
        RewardConfig(**{field: value}).validate()


def test_the_sweeps_frozen_variant_trains_only_the_upper_layers_and_restores_the_trainer(data_dir):
    """`python -m b2b.tools.reward_sweep --set ...,freeze=2`: the embeddings and the two lowest layers
    keep their initial weights while the rest train; `b2b run`'s own trainer is back afterwards."""
    from b2b import reward, reward_models
    from b2b.config import get_profile
    from b2b.data import load_preferences
    from b2b.models import load_reward_model, load_tokenizer
    from b2b.recipes import reward_config
    from b2b.tools.reward_sweep import parse, variant

    assert parse("epochs=0.3,freeze=2,precision=bf16") == {"epochs": 0.3, "freeze": 2, "precision": "bf16"}
    p = get_profile("ci")
    train = load_preferences(data_dir, "train", limit=16)
    tok = load_tokenizer(p.reward_backbone)
    cfg = reward_config(p, 1, eval_every=10**9, limit=16, batch_size=8, warmup=0)
    plain, plain_trainer = reward_models.train_from_backbone, reward.train_reward_model
    torch.manual_seed(cfg.seed)  # the variant's own initialisation, before any step
    before = load_reward_model(p.reward_backbone, num_labels=1, pad_token_id=tok.pad_token_id)
    with variant(freeze=2):
        rm, history = reward_models.train_from_backbone(p, cfg, tok, train, progress=False)
    assert reward_models.train_from_backbone is plain and len(history) == 2
    assert reward.train_reward_model is plain_trainer
    ref = before.state_dict()
    for name, w in rm.state_dict().items():
        frozen = "embed_tokens" in name or any(f"layers.{i}." in name for i in (0, 1))
        assert torch.allclose(w, ref[name]) == frozen, name
