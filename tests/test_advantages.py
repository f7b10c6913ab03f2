import itertools
import math

import pytest
import torch

from b2b.advantages import moving_average_baseline, reinforce_loss, repeated_ngram_fraction, shaped_reward
from b2b.rollout import repetition_penalized


def test_moving_average_baseline_uses_the_previous_baseline():
    r = torch.tensor([1.0, 3.0, 5.0])
    adv, b = moving_average_baseline(r, baseline=2.0, decay=0.9)
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, 3.0]))      # R - b_prev, not R - b_new
    assert b == pytest.approx(0.9 * 2.0 + 0.1 * 3.0)
    adv0, b0 = moving_average_baseline(r, baseline=None, decay=0.9)  # first step: the batch mean
    assert torch.allclose(adv0, torch.tensor([-2.0, 0.0, 2.0])) and b0 == pytest.approx(3.0)


def test_reinforce_loss_gradient_pushes_up_positive_advantage_samples():
    logits = torch.zeros(2, 3, requires_grad=True)                  # two sequences of 3 tokens
    logp = torch.log_softmax(torch.stack([logits, -logits], -1), -1)[..., 0]  # log 0.5 each
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([2.0, -1.0])
    loss = reinforce_loss(adv, logp, mask)
    # L = -(1/2) * (2 * 2 log .5 + (-1) * 3 log .5)
    assert loss.item() == pytest.approx(-0.5 * (2 * 2 + (-1) * 3) * torch.log(torch.tensor(0.5)).item())
    loss.backward()
    g = logits.grad
    assert (g[0, :2] < 0).all() and g[0, 2] == 0                    # descent raises sample 0's tokens
    assert (g[1] > 0).all()                                          # and lowers sample 1's
    adv.requires_grad_(True)
    logits2 = torch.zeros(2, 3, requires_grad=True)
    reinforce_loss(adv, torch.log_softmax(torch.stack([logits2, -logits2], -1), -1)[..., 0], mask).backward()
    assert adv.grad is None                                          # advantages are constants


def test_repeated_ngram_fraction_counts_repeats_inside_the_mask():
    ids = torch.tensor([[1, 2, 3, 1, 2, 3, 9, 9],    # 3-grams: 123 231 312 123 -> 1 repeat of 4 (mask 6)
                        [1, 2, 3, 4, 5, 6, 7, 8],    # none repeat
                        [7, 7, 7, 7, 7, 7, 7, 7],    # 777 x 6: 5 repeats of 6
                        [1, 2, 0, 0, 0, 0, 0, 0]])   # shorter than n: 0
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0],
                         [1, 1, 1, 1, 1, 1, 1, 1],
                         [1, 1, 1, 1, 1, 1, 1, 1],
                         [1, 1, 0, 0, 0, 0, 0, 0]])
    rep = repeated_ngram_fraction(ids, mask, 3)
    assert torch.allclose(rep, torch.tensor([1 / 4, 0.0, 5 / 6, 0.0]))
    r, rep2 = shaped_reward(torch.tensor([1.0, 1.0, 1.0, 1.0]), ids, mask, coef=2.0)
    assert torch.allclose(r, 1 - 2 * rep) and torch.equal(rep, rep2)


def test_repetition_penalty_lowers_seen_tokens_both_signs():
    z = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = repetition_penalized(z, seen, 2.0)
    assert torch.allclose(out, torch.tensor([[1.0, -4.0, 1.0, -1.0]]))
    p0, p1 = z.softmax(-1), out.softmax(-1)
    assert (p1[0, :2] < p0[0, :2]).all()


# ----------------------------------------------------------------------------- KL, RLOO, REINFORCE++

from b2b.advantages import (clipped_pg_loss, group_mean_baseline, kl_per_token, kl_shaped_reward,  # noqa: E402
                            masked_mean, masked_whiten, returns_to_go, rloo_advantages, token_level_rewards)


def test_kl_estimators_on_hand_made_log_ratios():
    lp = torch.tensor([[math.log(0.5), math.log(0.2), math.log(0.9)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4), math.log(0.1)]])
    mask = torch.tensor([[1, 1, 0]])
    l = [math.log(2), math.log(0.5)]                                        # log pi - log pi_ref
    assert torch.allclose(kl_per_token(lp, ref, mask, "k1"), torch.tensor([[l[0], l[1], 0.0]]))
    assert torch.allclose(kl_per_token(lp, ref, mask, "k2"), torch.tensor([[l[0] ** 2 / 2, l[1] ** 2 / 2, 0.0]]))
    k3 = [0.5 - 1 + l[0], 2 - 1 + l[1]]                                     # pi_ref/pi - 1 - log(pi_ref/pi)
    assert torch.allclose(kl_per_token(lp, ref, mask, "k3"), torch.tensor([[k3[0], k3[1], 0.0]]))
    assert (kl_per_token(lp, ref, mask, "k3") >= 0).all()
    with pytest.raises(ValueError, match="k4"):
        kl_per_token(lp, ref, mask, "k4")


def test_k1_and_k3_are_unbiased_for_kl_pi_ref_on_samples_from_pi():
    pi = torch.tensor([0.7, 0.2, 0.1])
    ref = torch.tensor([0.3, 0.3, 0.4])
    true_kl = (pi * (pi / ref).log()).sum()                                 # KL(pi || ref), not (ref || pi)
    y = torch.multinomial(pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lp, lr = pi.log()[y][None], ref.log()[y][None]
    ones = torch.ones_like(lp)
    for est in ("k1", "k3"):
        assert abs(kl_per_token(lp, lr, ones, est).mean() - true_kl) < 0.01, est
    assert abs(kl_per_token(lr, lp, ones, "k1").mean() - true_kl) > 0.1     # swapped arguments: wrong sign


def test_kl_shaped_reward_subtracts_beta_times_the_masked_sequence_kl():
    r = torch.tensor([1.0, 2.0])
    lp = torch.tensor([[-1.0, -1.0, -5.0], [-2.0, -2.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-2.0, -1.5, -1.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    R, kl = kl_shaped_reward(r, lp, ref, mask, beta=0.1)
    assert torch.allclose(kl, torch.tensor([1.5, 0.0]))                    # the masked -4 is left out
    assert torch.allclose(R, torch.tensor([1.0 - 0.15, 2.0]))
    assert not R.requires_grad                                              # a reward, not a loss


def test_rloo_leaves_each_sample_out_of_its_own_baseline():
    R = torch.tensor([1.0, 2.0, 3.0, 6.0, 10.0, 10.0, 10.0, 14.0])        # two prompts, k = 4
    A = rloo_advantages(R, 4)
    assert torch.allclose(A[:4], torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3]))
    assert torch.allclose(A[4:], torch.tensor([-34 / 3 + 10, -34 / 3 + 10, -34 / 3 + 10, 14 - 10]))
    g = R.view(2, 4)
    assert torch.allclose(A, (4 / 3 * (g - g.mean(1, keepdim=True))).view(-1))
    assert torch.allclose(rloo_advantages(torch.tensor([3.0, 5.0]), 2), torch.tensor([-2.0, 2.0]))
    with pytest.raises(ValueError, match="k .*>= 2"):
        rloo_advantages(R, 1)
    with pytest.raises(ValueError, match="groups of k=3"):
        rloo_advantages(R, 3)


def test_group_mean_baseline_centres_each_group_separately():
    R = torch.tensor([1.0, 3.0, 10.0, 20.0])
    assert torch.allclose(group_mean_baseline(R, 2), torch.tensor([-1.0, 1.0, -5.0, 5.0]))


def test_token_rewards_put_the_reward_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    r = token_level_rewards(torch.tensor([5.0, -1.0]), kl, mask, beta=1.0)
    assert torch.allclose(r, torch.tensor([[-0.1, -0.2, 5 - 0.3, 0.0], [-0.5, -0.5, -0.5, -1.5]]))
    G = returns_to_go(r, mask)
    assert torch.allclose(G, torch.tensor([[4.4, 4.5, 4.7, 0.0], [-3.0, -2.5, -2.0, -1.5]]))


def test_masked_whiten_uses_only_masked_tokens_of_the_whole_batch():
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, -99.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = masked_whiten(x, mask)
    vals = w[mask.bool()]
    assert abs(vals.mean()) < 1e-6 and abs(vals.pow(2).mean() - 1) < 1e-5
    assert torch.allclose(vals, (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(1.25), atol=1e-6)
    assert (w[:, 2] == 0).all()
    assert torch.allclose(masked_mean(x, mask), torch.tensor(2.5))


def test_clipped_loss_clips_only_in_the_direction_the_advantage_pushes():
    old = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]])).requires_grad_(True)
    A = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, frac = clipped_pg_loss(lp, old, A, mask, clip=0.2)
    # min(rho A, clip(rho) A): 1.2 (clipped), -1.5, 0.5, -0.8 (clipped)
    assert torch.allclose(loss, -torch.tensor(1.2 - 1.5 + 0.5 - 0.8) / 4)
    assert torch.allclose(frac, torch.tensor(0.5))
    loss.backward()
    g = lp.grad[0]
    assert g[0] == 0 and g[3] == 0                                          # clipped tokens pass no gradient
    assert torch.allclose(g[1], torch.tensor(1.5 / 4)) and torch.allclose(g[2], torch.tensor(-0.5 / 4))
    loss_m, _ = clipped_pg_loss(lp.detach(), old, A, torch.tensor([[1, 1, 0, 0]]), clip=0.2)
    assert torch.allclose(loss_m, -torch.tensor(1.2 - 1.5) / 2)             # mean over masked tokens only


# ----------------------------------------------------------------------------- guards and exact claims

def test_kl_estimators_stay_finite_at_extreme_log_ratios():
    from b2b.advantages import LOG_RATIO_CLAMP

    lp = torch.tensor([[-100.0, 0.0, -0.5, 0.0]], requires_grad=True)    # log-ratios -100, +100, 0.5, 0
    ref = torch.tensor([[0.0, -100.0, -1.0, 0.0]])
    mask = torch.ones(1, 4)
    l = torch.tensor([-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP, 0.5, 0.0])
    for est, want in (("k1", l), ("k2", l ** 2 / 2), ("k3", torch.exp(-l) - 1 + l)):
        k = kl_per_token(lp, ref, mask, est)
        assert torch.isfinite(k).all(), est
        assert torch.allclose(k[0], want, rtol=1e-5), est                 # clamped, then the estimator
    kl_per_token(lp, ref, mask, "k3").sum().backward()
    assert lp.grad[0, 0] == 0 and lp.grad[0, 1] == 0 and lp.grad[0, 2] != 0  # no gradient past the clamp
    assert torch.isfinite(kl_shaped_reward(torch.zeros(1), lp, ref, mask, 0.1, "k3")[0]).all()


def test_masked_whiten_keeps_a_constant_batch_near_zero():
    x = torch.full((3, 5), 0.3) + torch.tensor([0.0, 1e-7, -1e-7, 0.0, 0.0])  # float noise, no signal
    mask = torch.ones(3, 5)
    w = masked_whiten(x, mask)
    assert w.abs().max() < 1e-2                                              # 1e-8 floor: not unit scale
    y = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])                           # a real spread is still whitened
    wy = masked_whiten(y, torch.ones(1, 5))
    assert torch.allclose(wy.pow(2).mean(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(masked_whiten(y, torch.ones(1, 5), var_floor=1e6), (y - 3) / 1e3)


def _bandit_expected_gradient(B: int, baseline):
    """Exact E[grad of -reinforce_loss] for B samples of a 2-armed softmax bandit, and grad J."""
    theta = torch.tensor([0.3, -0.2], requires_grad=True)
    reward = torch.tensor([1.0, 3.0])
    total = torch.zeros(2)
    for ys in itertools.product(range(2), repeat=B):
        ys = torch.tensor(ys)
        logp = theta.log_softmax(-1)
        weight = logp[ys].sum().exp().detach()                               # P(this batch)
        adv, _ = moving_average_baseline(reward[ys], baseline)
        g, = torch.autograd.grad(-reinforce_loss(adv, logp[ys][:, None], torch.ones(B, 1)), theta)
        total += weight * g
    true, = torch.autograd.grad((theta.softmax(-1) * reward).sum(), theta)
    return total, true


def test_moving_average_baseline_is_unbiased_after_the_first_step_and_shrinks_the_first():
    for B in (2, 3):
        later, true = _bandit_expected_gradient(B, baseline=1.7)
        assert torch.allclose(later, true, atol=1e-6)
        first, _ = _bandit_expected_gradient(B, baseline=None)
        assert torch.allclose(first, (1 - 1 / B) * true, atol=1e-6)        # the docstring's (1 - 1/B)


def test_defaults_messages_and_single_token_batches():
    """The documented defaults, the error messages, and a batch holding one real token (a mean
    over one entry divides by one)."""
    r = torch.tensor([1.0, 3.0])
    adv, b = moving_average_baseline(r, baseline=1.0)                      # default decay 0.9
    assert b == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)
    with pytest.raises(ValueError, match=r"^group baseline: 3 rewards do not split into groups of k=2$"):
        group_mean_baseline(torch.ones(3), 2)
    with pytest.raises(ValueError, match=r"^rloo: 3 rewards do not split into groups of k=2$"):
        rloo_advantages(torch.ones(3), 2)
    one = torch.tensor([[0.0, 1.0, 0.0]])
    x = torch.tensor([[5.0, 3.0, 7.0]])
    assert masked_mean(x, one).item() == pytest.approx(3.0)
    lp = torch.log(torch.tensor([[1.0, 1.5, 1.0]]))
    loss, frac = clipped_pg_loss(lp, torch.zeros(1, 3), torch.tensor([[9.0, 2.0, 9.0]]), one)
    assert loss.item() == pytest.approx(-1.2 * 2.0) and frac.item() == 1.0  # default clip 0.2
    assert torch.equal(kl_per_token(lp, lp - 1, one), one)                   # default estimator k1
    with pytest.raises(ValueError, match=r"^kl estimator: expected one of k1, k2, k3, got 'k4'$"):
        kl_per_token(lp, lp, one, "k4")


def test_repeated_ngram_fraction_edges():
    short = repeated_ngram_fraction(torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2))
    assert torch.equal(short, torch.zeros(2))                                # shorter than n: no n-grams
    assert torch.allclose(repeated_ngram_fraction(torch.tensor([[5, 6, 5, 6, 5]]), torch.ones(1, 5)),
                          torch.tensor([1 / 3]))                              # default n = 3: 565 656 565
    # digits up to the largest id: with base max(id) instead of max(id) + 1, (1, 0, 0) and (0, 2, 0)
    # would hash alike and count as a repeat
    assert repeated_ngram_fraction(torch.tensor([[1, 0, 0, 0, 2, 0]]), torch.ones(1, 6)).item() == 0.0
    big = 2 ** 21                                                           # V = 2^21: V^3 = 2^63 fits
    assert repeated_ngram_fraction(torch.tensor([[big - 1, 1, 2, big - 1, 1, 2]]), torch.ones(1, 6)).item() == 0.25
    with pytest.raises(ValueError, match="n=3 is too large for a vocabulary of 2097153 tokens"):
        repeated_ngram_fraction(torch.tensor([[big, 1, 2]]), torch.ones(1, 3))
    # hashes are exact integers: in float32, (1, 0, 1) and (0, 0, 1) would round together at V = 2^21
    assert repeated_ngram_fraction(torch.tensor([[1, 0, 0, 1, 0, 1, big - 1]]), torch.ones(1, 7)).item() == 0.0
    # the n-gram of id 0 repeated (its hash is 0) counts like any other
    assert repeated_ngram_fraction(torch.tensor([[0, 0, 0, 0]]), torch.ones(1, 4)).item() == 0.5
    # only n-grams wholly inside the mask count, whatever the mask's shape
    holed = repeated_ngram_fraction(torch.tensor([[1, 2, 3, 1, 2, 3]]), torch.tensor([[1, 1, 1, 0, 1, 1]]))
    assert holed.item() == 0.0 and holed.dtype == torch.float32
    two = repeated_ngram_fraction(torch.tensor([[4, 4, 4]]), torch.ones(1, 3), n=2)
    assert two.item() == 0.5


def test_shaped_reward_defaults_and_dtype():
    ids, mask = torch.tensor([[7, 7, 7, 7]]), torch.ones(1, 4)
    r = torch.tensor([2.0])
    R, rep = shaped_reward(r, ids, mask)                                     # default coef 0: no penalty
    assert torch.equal(R, r) and rep.item() == 0.5                           # default n = 3
    R2, rep2 = shaped_reward(r, ids, mask, coef=1.0, n=2)                    # 77 x 3: 2 repeats of 3
    assert rep2.item() == pytest.approx(2 / 3) and R2.item() == pytest.approx(2 - 2 / 3)
    assert shaped_reward(r.bfloat16(), ids, mask, coef=1.0)[0].dtype == torch.bfloat16


def test_masked_whiten_formula_at_and_above_the_floor():
    x = torch.tensor([[0.0, 1e-6, 5.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)                                                  # variance 2.5e-13 < floor 1e-8
    assert torch.allclose(w, torch.tensor([[-5e-7, 5e-7, 0.0]]) / (1e-4 + 1e-8), rtol=1e-6)
    small = torch.tensor([[0.0, 0.02, 0.01, 0.03]])                          # a real spread of std ~0.011
    ws = masked_whiten(small, torch.ones(1, 4))
    assert torch.allclose(ws.pow(2).mean(), torch.tensor(1.0), atol=1e-4)   # the floor does not touch it
    assert torch.equal(masked_whiten(torch.tensor([[3.0, 7.0]]), torch.tensor([[0.0, 1.0]])), torch.zeros(1, 2))
    assert masked_whiten(x.bfloat16(), m.double()).dtype == torch.bfloat16


def test_clipped_loss_on_a_batch_with_old_logprobs_gradients_and_tokens_inside_the_clip():
    """Two sequences of different lengths, old log-probs away from zero, every input carrying a
    gradient: the ratio is pi / pi_old, the loss is a mean over the batch's real tokens (not a
    mean of per-sequence means), and neither old log-probs nor advantages receive a gradient."""
    old = torch.log(torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 0.9]])).requires_grad_(True)
    rho = torch.tensor([[1.1, 1.5, 0.7], [0.9, 0.5, 1.0]])                 # 2 of 5 real tokens inside [0.8, 1.2]
    lp = (old.detach() + rho.log()).requires_grad_(True)
    A = torch.tensor([[2.0, 1.0, -1.0], [-3.0, -1.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, frac = clipped_pg_loss(lp, old, A, mask, clip=0.2)
    terms = [1.1 * 2.0, 1.2 * 1.0, 0.8 * -1.0, 0.9 * -3.0, 0.8 * -1.0]      # min(rho A, clip(rho) A)
    assert loss.item() == pytest.approx(-sum(terms) / 5, rel=1e-5)          # token mean, not (seq means)/2
    assert frac.item() == pytest.approx(3 / 5)                              # the 3 clipped; equal terms are not
    loss.backward()
    assert old.grad is None and A.grad is None                              # both detached
    assert lp.grad[0, 1] == 0 and lp.grad[0, 2] == 0                        # clipped: no gradient
    assert lp.grad[1, 1] == 0 and lp.grad[1, 2] == 0                        # clipped; masked
    assert torch.allclose(lp.grad[0, 0], torch.tensor(-1.1 * 2.0 / 5))
    assert not frac.requires_grad


def test_reinforce_loss_sums_tokens_and_averages_sequences():
    """Sequences of lengths 1 and 3 with different advantages and log-probs: a per-sequence length
    normalisation or a token mean would give another number."""
    logp = torch.tensor([[-0.5, -9.0, -9.0], [-1.0, -2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    A = torch.tensor([3.0, -1.0], requires_grad=True)
    loss = reinforce_loss(A, logp, mask)
    assert loss.item() == pytest.approx(-(3.0 * -0.5 + -1.0 * -3.5) / 2)
    loss.backward()
    assert A.grad is None and torch.allclose(logp.grad, torch.tensor([[-1.5, 0, 0], [0.5, 0.5, 0.5]]))


def test_outputs_keep_the_dtype_of_their_inputs():
    """Masks of another dtype (int, float64) do not promote the result: bf16 / fp32 stay what they were."""
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.bfloat16)
    m64 = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    assert masked_mean(x, m64).dtype == torch.bfloat16
    assert clipped_pg_loss(x, x, x, m64)[0].dtype == torch.bfloat16
    assert clipped_pg_loss(x, x, x, m64)[1].dtype == torch.bfloat16
    kl = torch.tensor([[0.1, 0.2, 0.3]])
    assert token_level_rewards(torch.tensor([1.0]), kl, m64, 1.0).dtype == torch.float32
    assert token_level_rewards(torch.tensor([1.0], dtype=torch.float64), kl, m64, 1.0).dtype == torch.float32
    lp64 = torch.zeros(1, 3, dtype=torch.float64)
    R, _ = kl_shaped_reward(torch.tensor([1.0]), lp64, lp64 - 1, torch.ones(1, 3), 0.1)
    assert R.dtype == torch.float32 and R.item() == pytest.approx(0.7)


# ----------------------------------------------------------------------------- GRPO and Dr. GRPO

def test_grpo_advantages_centre_and_scale_each_group_by_its_own_spread():
    from b2b.advantages import grpo_advantages

    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0])                   # two groups of k = 3
    a = grpo_advantages(r, 3, eps=0.0)
    # group 1: mean 2, sample std 1; group 2: mean 20, sample std sqrt(300) (divided by k - 1, not k)
    want = torch.tensor([-1.0, 0.0, 1.0, -10 / 300 ** 0.5, -10 / 300 ** 0.5, 20 / 300 ** 0.5])
    assert torch.allclose(a, want, atol=1e-6)
    assert torch.allclose(grpo_advantages(r, 3, scale=False), torch.tensor([-1.0, 0, 1, -10, -10, 20]))
    same = grpo_advantages(torch.tensor([5.0, 5.0, 1.0, 3.0]), 2)
    assert same[0] == 0 and same[1] == 0                                   # equal rewards: no signal, not 0/0
    with pytest.raises(ValueError, match="k=3"):
        grpo_advantages(torch.ones(4), 3)
    with pytest.raises(ValueError, match=">= 2"):
        grpo_advantages(torch.ones(4), 1)


def test_grpo_loss_means_each_answer_and_dr_grpo_divides_by_a_constant():
    from b2b.advantages import grpo_loss

    # two answers: 3 tokens (advantage +1) and 1 token (advantage -2); rho = 1 at every token
    lp = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    A = torch.tensor([1.0, -2.0])
    loss, frac = grpo_loss(lp, lp.detach(), None, A, mask)
    assert torch.allclose(loss, torch.tensor(((-1 - 1 - 1) / 3 + 2 / 1) / 2))  # mean over answers of token means
    assert frac == 0
    loss.backward()
    assert torch.allclose(lp.grad, torch.tensor([[-1 / 6, -1 / 6, -1 / 6, 0], [1.0, 0, 0, 0]]))  # 1/|y_i| per answer
    lp.grad = None
    dr, _ = grpo_loss(lp, lp.detach(), None, A, mask, max_tokens=4)
    assert torch.allclose(dr, torch.tensor((-3 + 2) / (2 * 4)))            # sum over tokens / (B * max_tokens)
    dr.backward()
    assert torch.allclose(lp.grad, torch.tensor([[-1 / 8, -1 / 8, -1 / 8, 0], [2 / 8, 0, 0, 0]]))  # same per token
    per_token = A[:, None].expand(2, 4)
    assert torch.allclose(grpo_loss(lp, lp.detach(), None, per_token, mask)[0], loss)  # (B, C) advantages too


def test_grpo_loss_clips_the_ratio_and_adds_a_differentiated_k3_kl():
    from b2b.advantages import grpo_loss

    old = torch.zeros(2, 2)
    lp = torch.tensor([[0.5, 0.0], [-0.5, 0.0]], requires_grad=True)      # rho = e^0.5 (1.65), e^-0.5 (0.61)
    mask = torch.tensor([[1, 0], [1, 0]])
    A = torch.tensor([1.0, -1.0])
    loss, frac = grpo_loss(lp, old, None, A, mask, clip=0.2)
    # min(rho A, clip(rho) A): 1.2 (clipped, A > 0), -0.8 (clipped, A < 0): both tokens clipped
    assert torch.allclose(loss, -torch.tensor((1.2 - 0.8) / 2)) and torch.allclose(frac, torch.tensor(1.0))
    loss.backward()
    assert (lp.grad == 0).all()                                            # clipped tokens pass no gradient
    ref = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    lp2 = torch.tensor([[0.1, 0.0], [-0.1, 0.0]], requires_grad=True)     # inside the clip range
    beta = 0.5
    with_kl, _ = grpo_loss(lp2, old, ref, A, mask, clip=0.2, beta=beta)
    without, _ = grpo_loss(lp2, old, ref, A, mask, clip=0.2, beta=0.0)
    l = torch.tensor([0.1, -0.1])                                          # log pi - log pi_ref
    k3 = torch.exp(-l) - 1 + l
    assert torch.allclose(with_kl - without, beta * k3.mean())
    with_kl.backward()
    rho = torch.exp(l)
    # d/dl of -rho A + beta k3 = -rho A + beta (1 - e^-l), divided by B = 2 (one token per answer)
    assert torch.allclose(lp2.grad[:, 0], (-rho * A + beta * (1 - torch.exp(-l))) / 2)
    assert torch.allclose(grpo_loss(lp2, old, None, A, mask, beta=beta)[0], without)  # no reference: no KL


def test_clipped_loss_refuses_per_answer_advantages():
    """(B,) advantages against (B, C) log-probs with B == C would broadcast along the tokens, each
    answer's token t weighted by answer t's advantage: refused, whatever B and C are."""
    from b2b.advantages import clipped_pg_loss

    logp, mask = torch.zeros(4, 4, requires_grad=True), torch.ones(4, 4)
    for adv in (torch.tensor([1.0, -1.0, 0.5, 2.0]), torch.ones(4, 1)):
        with pytest.raises(ValueError, match=r"advantages of shape .* expected one per token, \(4, 4\)"):
            clipped_pg_loss(logp, logp.detach(), adv, mask)
    loss, _ = clipped_pg_loss(logp, logp.detach(), torch.tensor([1.0, -1.0, 0.5, 2.0])[:, None] * mask, mask)
    assert loss.item() == pytest.approx(-(4 - 4 + 2 + 8) / 16)
