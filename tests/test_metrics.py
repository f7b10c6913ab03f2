import math

import torch

from b2b.reward import scalar_reward
from b2b.metrics import distinct_n


def test_distinct_2_by_hand():
    # bigrams: (a b) (b c) | (a b) (b d) -> 3 unique of 4
    assert distinct_n(["a b c", "A, b d."]) == 0.75
    assert distinct_n(["x x x x x"]) == 0.25
    assert distinct_n(["one"]) == 0.0 and distinct_n([]) == 0.0
    assert distinct_n(["a b c"], n=3) == 1.0


def test_scalar_reward_readouts():
    assert scalar_reward(torch.tensor([[0.5], [-2.0]])).tolist() == [0.5, -2.0]
    # ordinal model: expected class with classes numbered 1..K
    sure_of_7 = torch.full((1, 10), -1e9)
    sure_of_7[0, 6] = 0.0
    assert math.isclose(scalar_reward(sure_of_7).item(), 7.0)
    uniform = torch.zeros(1, 10)
    assert math.isclose(scalar_reward(uniform).item(), 5.5)
    half = torch.full((1, 10), -1e9)
    half[0, 0] = half[0, 9] = 0.0
    assert math.isclose(scalar_reward(half).item(), 5.5, rel_tol=1e-6)


def test_correlations_by_hand():
    from b2b.metrics import _ranks, pearson, spearman

    assert _ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert math.isclose(pearson([1, 2, 3], [2, 4, 6]), 1.0)
    assert math.isclose(pearson([1, 2, 3], [3, 2, 1]), -1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0
    assert math.isclose(spearman([1, 2, 3, 4], [1, 4, 9, 100]), 1.0)  # monotone, not linear
    assert math.isclose(spearman([1, 2, 3], [1, 3, 2]), 0.5)
