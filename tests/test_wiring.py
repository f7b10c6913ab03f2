"""The step's wiring: what `b2b.step` and the algorithms' records (`b2b.algorithms`) hand each estimator, checked on hand-made tensors and on
short runs of the tiny policy. Each test would fail if the KL's sign flipped, RLOO received the
rewards without the KL, an estimator or coefficient were dropped, the reward sat on the wrong
token, or the old log-probs came from a policy other than the one that sampled the batch."""
import copy
import dataclasses
import importlib
import math

import pytest
import torch

from b2b.advantages import clipped_pg_loss, kl_per_token, masked_mean, masked_whiten, rloo_advantages
from b2b.algorithms import ALGORITHMS, get
from b2b.rl_config import RLConfig

T = importlib.import_module("b2b.step")


def advantages(cfg, rewards, logp, ref, mask, baseline=None):
    """(advantages, state) of cfg.algo's record, as the step calls it."""
    a = get(cfg.algo)
    return a.advantages(a.fns(), rewards, logp, ref, mask, cfg, baseline)


def pp_advantages(cfg, rewards, logp, ref, mask):
    return advantages(cfg, rewards, logp, ref, mask)[0]


def clipped_loss(cfg, logp, old, adv, ref, mask):
    """(loss, clip fraction) of cfg.algo's record on one minibatch."""
    a = get(cfg.algo)
    return a.loss(a.fns(), logp, old, adv, ref, mask, cfg)


def update(policy, opt, ro, rewards, ref, state, cfg, step, ckpt):
    """The learn phase of the step (advantages, loss and optimizer steps) for cfg.algo."""
    return T.learn(policy, opt, ro, rewards, ref, state, cfg, get(cfg.algo), step, ckpt)

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
LOGP = torch.tensor([[-1.0, -0.5, -2.0, -9.0], [-0.2, -1.5, -9.0, -9.0],
                     [-0.7, -0.7, -0.3, -1.1], [-2.5, -9.0, -9.0, -9.0]])
REF = torch.tensor([[-1.5, -0.5, -1.0, -1.0], [-0.4, -1.0, -1.0, -1.0],
                    [-0.2, -1.7, -0.3, -0.1], [-1.0, -1.0, -1.0, -1.0]])
REWARD = torch.tensor([1.0, 2.0, 4.0, 0.5])


def _seq_kl(est="k1"):
    return kl_per_token(LOGP, REF, MASK, est).sum(1)


@pytest.mark.parametrize("est", ["k1", "k3"])
def test_rloo_gets_the_kl_shaped_reward(est):
    cfg = RLConfig(algo="rloo", k=2, batch_size=4, kl_coef=0.3, kl_estimator=est)
    logp = LOGP.clone().requires_grad_(True)
    adv, state = advantages(cfg, REWARD, logp, REF, MASK, baseline="untouched")
    R = REWARD - 0.3 * _seq_kl(est)                               # r - beta * KL, masked tokens only
    assert torch.allclose(adv, rloo_advantages(R, 2))
    assert not torch.allclose(adv, rloo_advantages(REWARD, 2))    # the KL reached the advantages
    assert not adv.requires_grad and state == "untouched"         # a reward, not a loss; no EMA state


def test_reinforce_moving_average_with_and_without_kl():
    cfg = RLConfig(algo="reinforce", batch_size=4, kl_coef=0.5, baseline_decay=0.8)
    adv, b = advantages(cfg, REWARD, LOGP, REF, MASK, baseline=1.0)
    R = REWARD - 0.5 * _seq_kl()
    assert torch.allclose(adv, R - 1.0)
    assert b == pytest.approx(0.8 * 1.0 + 0.2 * R.mean().item())
    off = dataclasses.replace(cfg, kl_coef=0.0)
    adv0, b0 = advantages(off, REWARD, LOGP, REF, MASK, baseline=1.0)
    assert torch.allclose(adv0, REWARD - 1.0) and b0 == pytest.approx(0.8 + 0.2 * REWARD.mean().item())


def _hand_returns(reward, kl, beta):
    """Returns to go computed the slow way, row by row: sum over later real tokens of -beta kl,
    plus the reward if the row's last real token lies at or after t."""
    B, C = kl.shape
    G = torch.zeros(B, C)
    for i in range(B):
        last = int(MASK[i].sum()) - 1
        for t in range(last + 1):
            G[i, t] = sum(-beta * kl[i, s] for s in range(t, last + 1)) + reward[i]
    return G


@pytest.mark.parametrize("est", ["k1", "k2"])
def test_reinforce_pp_advantages_by_hand(est):
    cfg = RLConfig(algo="reinforce_pp", batch_size=4, kl_coef=0.2, kl_estimator=est, whiten=False)
    kl = kl_per_token(LOGP, REF, MASK, est)
    raw = pp_advantages(cfg, REWARD, LOGP, REF, MASK)
    assert torch.allclose(raw, _hand_returns(REWARD, kl, 0.2), atol=1e-6)
    assert torch.allclose(pp_advantages(dataclasses.replace(cfg, whiten=True), REWARD, LOGP, REF, MASK),
                          masked_whiten(raw, MASK), atol=1e-6)
    off = pp_advantages(dataclasses.replace(cfg, kl_coef=0.0), REWARD, LOGP, REF, MASK)
    assert torch.allclose(off, _hand_returns(REWARD, torch.zeros_like(kl), 0.0))


def test_reinforce_pp_baseline_advantages_centre_groups_and_keep_the_kl_out():
    cfg = RLConfig(algo="reinforce_pp_baseline", k=2, batch_size=4, kl_coef=0.5, whiten=False)
    adv = pp_advantages(cfg, REWARD, LOGP, REF, MASK)
    centred = torch.tensor([-0.5, 0.5, 1.75, -1.75])             # each pair around its own mean
    assert torch.allclose(adv, centred[:, None] * MASK)           # no KL in the reward: it is a loss


def test_reinforce_pp_baseline_advantages_are_whitened_over_the_batchs_tokens():
    cfg = RLConfig(algo="reinforce_pp_baseline", k=2, batch_size=4, kl_coef=0.5)
    raw = pp_advantages(dataclasses.replace(cfg, whiten=False), REWARD, LOGP, REF, MASK)
    adv = pp_advantages(cfg, REWARD, LOGP, REF, MASK)
    assert torch.allclose(adv, masked_whiten(raw, MASK)) and not torch.allclose(adv, raw)
    tokens = adv[MASK.bool()]
    assert abs(tokens.mean().item()) < 1e-6 and tokens.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("algo", ["grpo", "dr_grpo"])
def test_group_advantages_take_the_log_probs_dtype(algo):
    """Per-token advantages come in the log-probs' dtype (float64 here) whatever the rewards' (float32)."""
    cfg = RLConfig(algo=algo, k=2, batch_size=4)
    adv = pp_advantages(cfg, REWARD, LOGP.double(), REF.double(), MASK)  # a float32 mask: the cast decides
    assert adv.dtype == torch.float64 and adv.shape == MASK.shape


def test_clipped_loss_adds_the_k2_loss_only_for_the_baseline_variant():
    old = LOGP - 0.1
    adv = torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.5, 0.5, 0.0, 0.0], [-1.0, 1.0, -1.0, 1.0], [3.0, 0, 0, 0]])
    for algo, extra in (("reinforce_pp_baseline", True), ("reinforce_pp", False)):
        cfg = RLConfig(algo=algo, k=2, batch_size=4, kl_coef=0.4, clip=0.05)
        logp = LOGP.clone().requires_grad_(True)
        loss, frac = clipped_loss(cfg, logp, old, adv, REF, MASK)
        pg, frac_pg = clipped_pg_loss(LOGP, old, adv, MASK, 0.05)
        assert frac_pg > 0                                         # the clip range matters here
        k2 = masked_mean(kl_per_token(LOGP, REF, MASK, "k2"), MASK)
        assert torch.allclose(loss, pg + 0.4 * k2 if extra else pg) and torch.allclose(frac, frac_pg)
        loss.backward()
        # the k2 term's gradient pulls every token toward the reference: d/dl (l^2 / 2) = l
        logp2 = LOGP.clone().requires_grad_(True)
        clipped_pg_loss(logp2, old, adv, MASK, 0.05)[0].backward()
        want = logp2.grad + (0.4 * (LOGP - REF) * MASK / MASK.sum() if extra else 0)
        assert torch.allclose(logp.grad, want, atol=1e-6)


def test_grpo_advantages_put_each_answers_group_advantage_at_all_its_tokens():
    from b2b.advantages import grpo_advantages

    for algo, scale in (("grpo", True), ("dr_grpo", False)):
        cfg = RLConfig(algo=algo, k=2, batch_size=4, kl_coef=0.5)
        adv = pp_advantages(cfg, REWARD, LOGP, REF, MASK)
        want = grpo_advantages(REWARD, 2, scale=scale)
        assert torch.allclose(adv, want[:, None] * MASK)          # no KL in the advantages: it is a loss
    assert not torch.allclose(pp_advantages(RLConfig(algo="grpo", k=2, batch_size=4), REWARD, LOGP, REF, MASK),
                              pp_advantages(RLConfig(algo="dr_grpo", k=2, batch_size=4), REWARD, LOGP, REF, MASK))


def test_clipped_loss_of_grpo_and_dr_grpo_is_grpo_loss_with_their_normaliser():
    from b2b.advantages import grpo_loss

    old = LOGP - 0.1
    adv = torch.tensor([1.0, -1.0, 2.0, 0.5])[:, None] * MASK
    for algo, max_tokens in (("grpo", None), ("dr_grpo", 7)):
        cfg = RLConfig(algo=algo, k=2, batch_size=4, kl_coef=0.4, clip=0.05, max_new_tokens=7)
        loss, frac = clipped_loss(cfg, LOGP, old, adv, REF, MASK)
        want, want_frac = grpo_loss(LOGP, old, REF, adv, MASK, 0.05, 0.4, max_tokens)
        assert torch.allclose(loss, want) and torch.allclose(frac, want_frac) and frac > 0


def test_without_a_kl_coefficient_no_reference_is_needed():
    """kl_coef 0 and track_kl off: there are no reference log-probs, and nothing asks for them."""
    for algo, k in (("reinforce", 1), ("rloo", 2)):
        cfg = RLConfig(algo=algo, k=k, batch_size=4, kl_coef=0.0)
        adv, _ = advantages(cfg, REWARD, LOGP, None, MASK, baseline=0.0)
        assert torch.allclose(adv, rloo_advantages(REWARD, 2) if algo == "rloo" else REWARD)
    for algo in ("reinforce_pp", "reinforce_pp_baseline", "grpo"):
        cfg = RLConfig(algo=algo, k=2, batch_size=4, kl_coef=0.0)
        loss, _ = clipped_loss(cfg, LOGP, LOGP, torch.ones_like(LOGP), None, MASK)
        assert torch.allclose(loss, torch.tensor(-1.0))
        assert torch.isfinite(pp_advantages(cfg, REWARD, LOGP, None, MASK)).all()


# ----------------------------------------------------------------------------- short runs of the tiny policy

PROMPTS = ["What colour is a banana?", "Is a whale a fish?", "Name three birds.", "Describe a tiger."]


def _zero_reward(prompts, texts, finished):
    return [0.0] * len(prompts)


def _load_once():
    """The tiny policy and tokenizer, loaded at import: mutation testing forks every mutant's run
    from a process that imported this module, so each run starts with them in memory."""
    from pathlib import Path

    from b2b.models import load_policy, load_tokenizer

    tiny = Path(__file__).resolve().parent.parent / "data" / "tiny-sft"
    return load_policy(tiny, trainable=True), load_tokenizer(tiny)


_POLICY, _TOKENIZER = _load_once()


def _setup(tiny_dir):
    """A fresh copy of the tiny policy (trainable) and its tokenizer."""
    torch.manual_seed(0)
    return copy.deepcopy(_POLICY), _TOKENIZER


def _spy_loss(monkeypatch, algo):
    """Record every call of `algo`'s loss: (args, output), args as the record's loss takes them."""
    calls, rec = [], get(algo)

    def spy(*args, **kwargs):
        out = rec.loss(*args, **kwargs)
        calls.append((args, out))
        return out
    monkeypatch.setitem(ALGORITHMS, algo, dataclasses.replace(rec, loss=spy))
    return calls


def _spy(monkeypatch, name):
    calls = []
    real = getattr(T, name)

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((args, out))
        return out
    monkeypatch.setattr(T, name, spy)
    return calls


@pytest.mark.parametrize("epochs,minibatches,temperature", [(2, 2, 1.0), (1, 1, 0.7), (1, 2, 0.7), (2, 1, 1.0)])
def test_old_logprobs_come_from_the_policy_that_sampled(tiny_dir, monkeypatch, epochs, minibatches, temperature):
    policy, tok = _setup(tiny_dir)
    sampled = _spy(monkeypatch, "sample_completions")
    losses = _spy_loss(monkeypatch, "reinforce_pp")
    forwards = _spy(monkeypatch, "rollout_logprobs")
    cfg = RLConfig(algo="reinforce_pp", steps=1, batch_size=8, lr=5e-2, max_new_tokens=12, kl_coef=0.1,
                   ppo_epochs=epochs, minibatches=minibatches, temperature=temperature, eval_every=0,
                   sample_every=0, track_kl=True)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    prompts = [p for p in PROMPTS for _ in range(2)]
    T.rl_step(policy, tok, lambda p, t, f: [float(len(x)) for x in t], prompts, opt, torch.Generator().manual_seed(0),
              None, cfg, False, 1, ref=ref)
    ro = sampled[0][1]
    assert len(losses) == epochs * minibatches
    n = 8 // minibatches
    for j, (args, _) in enumerate(losses):
        old, mask = args[2], args[5]
        rows = slice((j % minibatches) * n, (j % minibatches + 1) * n)
        # the sampler's own log-probs (at the sampling temperature) are the sampling policy's, to
        # float precision; after one step at lr 5e-2 the policy's differ by far more
        assert torch.allclose(old * mask, ro.sampler_logprobs[rows], atol=1e-4), j
        assert torch.equal(mask, ro.completion_mask[rows])
    # one forward pass of the policy per update, plus one before them when there are several
    on_policy = [args for args, _ in forwards if args[0] is policy]
    assert len(on_policy) == epochs * minibatches + (epochs * minibatches > 1)
    assert all(args[2] == temperature for args in on_policy)
    if epochs * minibatches > 1:
        with torch.no_grad():
            after = T.rollout_logprobs(policy, ro, temperature)
        assert (after - ro.sampler_logprobs).abs().max() > 1e-2      # the updates moved the policy


def test_reinforce_update_uses_and_returns_the_baseline(tiny_dir, monkeypatch):
    policy, tok = _setup(tiny_dir)
    cfg = RLConfig(algo="reinforce", batch_size=4, max_new_tokens=8, temperature=0.8, baseline_decay=0.5)
    forwards = _spy(monkeypatch, "rollout_logprobs")
    ro = T.sample_completions(policy, tok, PROMPTS, 8, 0.8, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)
    upd = update(policy, opt, ro, REWARD, None, 2.0, cfg, 1, "none")
    assert torch.allclose(upd.advantages, REWARD - 2.0)
    assert upd.state == pytest.approx(0.5 * 2.0 + 0.5 * REWARD.mean().item())
    assert len(forwards) == 1 and forwards[0][0][2] == 0.8                 # one pass, at the sampling temperature
    assert torch.allclose(upd.logprobs, ro.sampler_logprobs, atol=1e-4) and not upd.logprobs.requires_grad


@pytest.mark.parametrize("algo", ["reinforce", "reinforce_pp"])
def test_non_finite_logprobs_stop_with_the_step_and_checkpoint(tiny_dir, monkeypatch, algo):
    from b2b.errors import TrainingError

    policy, tok = _setup(tiny_dir)
    real = T.rollout_logprobs

    def nan_logprobs(model, ro, *args, **kwargs):
        out = real(model, ro, *args, **kwargs)
        if model is not policy:
            return out
        return (out[0] * float("nan"), out[1]) if isinstance(out, tuple) else out * float("nan")
    monkeypatch.setattr(T, "rollout_logprobs", nan_logprobs)
    cfg = RLConfig(algo=algo, batch_size=4, max_new_tokens=8, ppo_epochs=1, minibatches=1)
    ro = T.sample_completions(policy, tok, PROMPTS, 8, 1.0, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)
    with pytest.raises(TrainingError, match=r"^step 7: log-probs is not finite .* last good checkpoint: ck-5\."):
        update(policy, opt, ro, REWARD, None, 0.0 if algo == "reinforce" else None, cfg, 7, "ck-5")


@pytest.mark.parametrize("algo,extra", [("reinforce", {}), ("rloo", {"k": 2}), ("reinforce_pp", {}),
                                        ("reinforce_pp", {"ppo_epochs": 2, "minibatches": 2}),
                                        ("reinforce_pp_baseline", {"k": 2}), ("grpo", {"k": 2}),
                                        ("dr_grpo", {"k": 2})])
def test_the_kl_penalty_pulls_every_algorithm_back_to_the_reference(tiny_dir, algo, extra):
    """With a reward of zero the KL is the only signal. The policy is the reference with its final
    norm's weights halved (a flatter distribution), and only those weights train: with kl_coef > 0
    every step must move them back toward the reference's; without it nothing moves at all. A
    flipped sign anywhere in the KL's path pushes them further away."""
    policy, tok = _setup(tiny_dir)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    w = policy.model.norm.weight
    w_ref = w.detach().clone()
    with torch.no_grad():
        w.mul_(0.5)
    start = w.detach().clone()
    for beta in (0.0, 1.0) if algo == "reinforce" else (1.0,):  # the control once: nothing moves without KL
        with torch.no_grad():
            w.copy_(start)
        cfg = RLConfig(algo=algo, steps=3, batch_size=8, lr=1e-2, max_new_tokens=12, kl_coef=beta,
                       eval_every=0, sample_every=0, **extra)
        opt = torch.optim.AdamW([w], lr=cfg.lr, weight_decay=0.0)
        gen, baseline, dist = torch.Generator().manual_seed(0), None, []
        batch = [p for p in PROMPTS for _ in range(cfg.k)] * (cfg.batch_size // (4 * cfg.k))
        for step in range(1, cfg.steps + 1):
            _, _, baseline = T.rl_step(policy, tok, _zero_reward, batch, opt, gen, baseline, cfg, False, step, ref=ref)
            dist.append(((w - w_ref).norm() / (start - w_ref).norm()).item())
        if beta == 0:
            assert dist == [1.0] * cfg.steps                          # zero reward, no KL: no signal
        else:
            assert all(b < a for a, b in zip([1.0] + dist, dist)) and dist[-1] < 0.995, dist


def test_clipped_update_averages_its_losses_and_splits_minibatches(tiny_dir, monkeypatch):
    policy, tok = _setup(tiny_dir)
    losses = _spy_loss(monkeypatch, "reinforce_pp")
    cfg = RLConfig(algo="reinforce_pp", steps=1, batch_size=8, max_new_tokens=8, ppo_epochs=3, minibatches=4,
                   eval_every=0, sample_every=0, track_kl=False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    m, _, _ = T.rl_step(policy, tok, _zero_reward, PROMPTS * 2, opt, torch.Generator().manual_seed(0), None, cfg,
                        False, 1)
    assert len(losses) == 12 and all(args[1].shape[0] == 2 for args, _ in losses)
    assert m["loss"] == pytest.approx(sum(out[0].item() for _, out in losses) / 12)
    assert m["ppo/clip_frac"] == pytest.approx(sum(out[1].item() for _, out in losses) / 12)
    assert math.isfinite(m["grad_norm"]) and "kl/ref" not in m


@pytest.mark.parametrize("algo", ["reinforce", "reinforce_pp"])
def test_a_non_finite_loss_names_the_step_and_checkpoint(tiny_dir, algo):
    from b2b.errors import TrainingError

    policy, tok = _setup(tiny_dir)
    cfg = RLConfig(algo=algo, batch_size=4, max_new_tokens=8, ppo_epochs=1, minibatches=1)
    ro = T.sample_completions(policy, tok, PROMPTS, 8, 1.0, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)
    inf = torch.tensor([1.0, float("inf"), 0.0, 2.0])
    with pytest.raises(TrainingError, match=r"^step 7: loss is not finite .* last good checkpoint: ck-5\."):
        update(policy, opt, ro, inf, None, 0.0 if algo == "reinforce" else None, cfg, 7, "ck-5")


def test_an_algorithm_without_clipping_takes_one_update_whatever_epochs_and_minibatches_say(tiny_dir):
    """REINFORCE's record is not clipped: ppo_epochs and minibatches do not apply to it (one forward
    pass, one optimizer step per batch); its advantages are per answer, REINFORCE++'s one per real token."""
    policy, tok = _setup(tiny_dir)
    ro = T.sample_completions(policy, tok, PROMPTS, 8, 1.0, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)
    cfg = RLConfig(algo="reinforce", batch_size=4, ppo_epochs=2, minibatches=2)
    upd = update(policy, opt, ro, REWARD, None, None, cfg, 1, "none")
    assert len(upd.losses) == len(upd.grad_norms) == 1 and upd.advantages.shape == (4,)
    pp = update(policy, opt, ro, REWARD, None, None, dataclasses.replace(cfg, algo="reinforce_pp"), 1, "none")
    assert len(pp.losses) == 4 and upd.clip_fracs == [] and len(pp.clip_fracs) == 4
    assert pp.advantages.shape == (int(ro.completion_mask.sum()),)   # the real tokens' advantages only


def test_a_clipped_algorithms_state_is_carried_through_its_updates(tiny_dir):
    """The state an algorithm keeps from step to step reaches its advantages and comes back, also
    for a clipped one that computes them before several updates."""
    from b2b.algorithms import REINFORCE_PP, derive

    def counting(p, rewards, logprobs, ref_logprobs, mask, cfg, state):
        return torch.zeros_like(logprobs), state + 1
    rec = derive(REINFORCE_PP, name="reinforce_pp", label="counting", advantages=counting)
    policy, tok = _setup(tiny_dir)
    ro = T.sample_completions(policy, tok, PROMPTS, 8, 1.0, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)
    for epochs, minibatches in ((1, 1), (2, 2)):  # advantages in the update's own pass, or before the updates
        cfg = RLConfig(algo="reinforce_pp", batch_size=4, ppo_epochs=epochs, minibatches=minibatches)
        assert T.learn(policy, opt, ro, REWARD, None, 5, cfg, rec, 1, "none").state == 6
