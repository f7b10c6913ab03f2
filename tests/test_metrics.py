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


def test_replay_rows_picks_evenly_spaced_logged_steps_first_and_last():
    from b2b.runs import History
    from b2b.widgets import replay_rows

    h = History(samples=[{"step": s, "prompt": f"p{s}", "response": f"r{s}", "gold": float(s)} for s in range(5, 55, 5)
                         for _ in range(2)])
    rows = replay_rows(h, n_steps=3)
    assert sorted({r["step"] for r in rows}) == [5, 25, 50] and len(rows) == 6   # two samples per picked step
    assert rows[0] == {"step": 5, "prompt": "p5", "completion": "r5", "gold": 5.0}
    assert replay_rows(History()) == []
    no_gold = History(samples=[{"step": 1, "prompt": "p", "response": "r"}])
    assert replay_rows(no_gold) == [{"step": 1, "prompt": "p", "completion": "r"}]


def test_collapse_flags_need_a_higher_proxy_and_lost_diversity():
    import torch

    from b2b.evaluate import collapse_flags

    flags = collapse_flags([0.0, 1.0, 2.0, -1.0], [0.6, 0.5, 0.2, 0.1], keep=0.5)
    assert flags.tolist() == [False, False, True, False]                      # the last: proxy below SFT's
    assert collapse_flags(torch.tensor([1.0, 2.0]), torch.tensor([0.4, 0.4])).tolist() == [False, False]
