"""What each KL placement's gradient is, measured exactly on a two-token model.

The policy writes two tokens from a vocabulary of three: y1 ~ softmax(a), y2 ~ softmax(b[y1]).
All nine sequences are enumerated, so every expectation below is exact (no sampling noise): the
expected gradient of a surrogate f(y; theta) over samples y ~ pi is grad sum_y sg(pi(y)) f(y; theta).
These tests are the sentences of `b2b.advantages`' KL comment and notebook 06's table.
"""
import itertools

import pytest
import torch

from b2b.advantages import kl_per_token, kl_shaped_reward, reinforce_loss

V = 3
SEQS = torch.tensor(list(itertools.product(range(V), repeat=2)))          # (9, 2)
MASK = torch.ones(len(SEQS), 2)


def _token_logprobs(a, b) -> torch.Tensor:
    """(9, 2) log pi(y1), log pi(y2 | y1) of every sequence."""
    la, lb = a.log_softmax(-1), b.log_softmax(-1)
    return torch.stack([la[SEQS[:, 0]], lb[SEQS[:, 0], SEQS[:, 1]]], 1)


@pytest.fixture
def setup():
    """A policy and a reference that agree on the second token after y1 = 0 and disagree after
    y1 = 1 or 2: how far the second token is from the reference depends on the first token, which
    is what a per-token loss cannot see."""
    a = torch.tensor([0.5, -0.3, 0.1], requires_grad=True)
    b = (1.5 * torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])).requires_grad_(True)
    ref_b = torch.stack([b[0], -b[1], -b[2]]).detach()
    ref = _token_logprobs(torch.zeros(V), ref_b).detach()
    return a, b, ref


def _grad(a, b, f) -> torch.Tensor:
    ga, gb = torch.autograd.grad(f, (a, b), allow_unused=True, retain_graph=True)
    return torch.cat([(torch.zeros_like(x) if g is None else g).flatten() for g, x in ((ga, a), (gb, b))])


def _true_kl(a, b, ref) -> torch.Tensor:
    lp = _token_logprobs(a, b).sum(1)
    return (lp.exp() * (lp - ref.sum(1))).sum()                            # KL(pi || pi_ref), sequences


def _weights(a, b) -> torch.Tensor:
    return _token_logprobs(a, b).sum(1).exp().detach()                     # pi(y), a constant


def _in_reward_grad(a, b, ref, est) -> torch.Tensor:
    """E[grad log pi(y) * sum_t k_t(y)]: the KL in the reward (kl_shaped_reward, beta 1, r = 0),
    through reinforce_loss. Its advantage R carries the weight pi(y) * N, so the loss's batch mean
    is the exact expectation; the loss is -E[R grad log pi], hence the sign."""
    lp = _token_logprobs(a, b)
    R, _ = kl_shaped_reward(torch.zeros(len(SEQS)), lp, ref, MASK, beta=1.0, estimator=est)
    adv = -R * _weights(a, b) * len(SEQS)                                  # -R = +beta * sum k
    return _grad(a, b, -reinforce_loss(adv, lp, MASK))


def _as_loss_grad(a, b, ref, est, mask=MASK) -> torch.Tensor:
    """E[grad sum_t k_t(y)] at fixed samples: the KL as a differentiated loss."""
    k = kl_per_token(_token_logprobs(a, b), ref, mask, est).sum(1)
    return _grad(a, b, (_weights(a, b) * k).sum())


def test_k1_and_k3_values_are_unbiased_k2_is_not(setup):
    a, b, ref = setup
    lp = _token_logprobs(a, b).detach()
    w = lp.sum(1).exp()
    kl = _true_kl(a, b, ref).item()
    for est in ("k1", "k3"):
        assert (w * kl_per_token(lp, ref, MASK, est).sum(1)).sum().item() == pytest.approx(kl, rel=1e-5), est
    assert abs((w * kl_per_token(lp, ref, MASK, "k2").sum(1)).sum().item() - kl) > 0.05 * kl


def test_k1_in_the_reward_gives_the_sequence_kl_gradient(setup):
    a, b, ref = setup
    true = _grad(a, b, _true_kl(a, b, ref))
    assert torch.allclose(_in_reward_grad(a, b, ref, "k1"), true, atol=1e-5)


@pytest.mark.parametrize("est", ["k2", "k3"])
def test_k2_and_k3_in_the_reward_do_not(setup, est):
    a, b, ref = setup
    true = _grad(a, b, _true_kl(a, b, ref))
    assert (_in_reward_grad(a, b, ref, est) - true).norm() > 0.1 * true.norm()


def test_k2_as_a_loss_is_the_kl_gradient_per_token_not_for_the_sequence(setup):
    a, b, ref = setup
    # one token's distribution (the first): E[grad l^2 / 2] = grad KL(pi(y1) || pi_ref(y1))
    first = torch.tensor([[1.0, 0.0]]).expand(len(SEQS), 2)
    lp1 = a.log_softmax(-1)
    ref1 = torch.stack([ref[SEQS[:, 0] == y, 0][0] for y in range(V)])      # log pi_ref(y1)
    kl_first = (lp1.exp() * (lp1 - ref1)).sum()                              # KL of the first token
    assert torch.allclose(_as_loss_grad(a, b, ref, "k2", first), _grad(a, b, kl_first), atol=1e-5)
    # summed over a sampled sequence's tokens it is not the sequence KL's gradient
    true = _grad(a, b, _true_kl(a, b, ref))
    assert (_as_loss_grad(a, b, ref, "k2") - true).norm() > 0.1 * true.norm()


def test_k3_as_a_loss_is_the_reverse_kl_gradient_and_k1_as_a_loss_is_zero(setup):
    a, b, ref = setup
    first = torch.tensor([[1.0, 0.0]]).expand(len(SEQS), 2)
    lp1 = a.log_softmax(-1)
    ref1 = torch.stack([ref[SEQS[:, 0] == y, 0][0] for y in range(V)])      # log pi_ref(y1)
    reverse = (ref1.exp() * (ref1 - lp1)).sum()                              # KL(pi_ref || pi), first token
    forward = (lp1.exp() * (lp1 - ref1)).sum()
    g = _as_loss_grad(a, b, ref, "k3", first)
    assert torch.allclose(g, _grad(a, b, reverse), atol=1e-5)
    assert (g - _grad(a, b, forward)).norm() > 0.1 * g.norm()
    assert torch.allclose(_as_loss_grad(a, b, ref, "k1"), torch.zeros(V + V * V), atol=1e-6)
