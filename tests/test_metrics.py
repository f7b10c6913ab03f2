import math

import torch

from b2b.evaluate import scalar_reward
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
