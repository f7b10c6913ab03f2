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
