"""The course's diagrams draw b2b's own numbers (notebooks 06 and 07)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from b2b import plots  # noqa: E402


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text()]


def test_rloo_group_labels_each_answer_with_its_leave_one_out_advantage():
    fig = plots.plot_rloo_group({"A": [1.0, 2.0, 3.0, 6.0], "B": [7.0, 7.0, 7.0, 7.0]})
    texts = _texts(fig)
    # 1 - (2+3+6)/3, 2 - (1+3+6)/3, 3 - (1+2+6)/3, 6 - (1+2+3)/3; group B all zero
    assert texts[:4] == ["A = -2.67", "A = -1.33", "A = 0", "A = +4.00"]
    assert texts[4:] == ["A = 0"] * 4
    ticks = [ln.get_ydata()[0] for ln in fig.axes[0].lines if ln.get_linewidth() == 2.2]
    assert np.allclose(ticks, [11 / 3, 10 / 3, 3.0, 2.0])  # the mean of the others, not of the group
    plt.close(fig)


def test_returns_to_go_sum_from_each_token_to_the_end():
    fig = plots.plot_returns_to_go(reward=5.0, kl=[0.1, 0.2, 0.3], beta=1.0)
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_text()]
    assert texts == ["-0.10", "4.40", "-0.20", "4.50", "+4.70", "4.70"]
    plt.close(fig)


def test_clipped_ratio_shades_where_the_gradient_is_zero():
    fig = plots.plot_clipped_ratio(clip=0.2)
    for ax, flat_side in zip(fig.axes, ("above", "below")):
        path = ax.collections[0].get_paths()[0].vertices[:, 0]
        lo, hi = path.min(), path.max()
        if flat_side == "above":  # A > 0: no push once rho > 1 + eps
            assert 1.18 <= lo <= 1.22 and hi >= 1.69
        else:  # A < 0: no push once rho < 1 - eps
            assert lo <= 0.41 and 0.78 <= hi <= 0.82
        clipped = ax.lines[1].get_ydata()
        assert np.isclose(max(clipped) if flat_side == "above" else clipped[0], 1.2 if flat_side == "above" else -0.8)
    plt.close(fig)
