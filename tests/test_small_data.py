"""Small data trains: any valid preference file, whatever its size, through every stage.

The files in tests/data are everyday English (not tiny-world text), as a learner would write them
by hand: 1, 9 and 24 pairs with the columns prompt, chosen, rejected.
"""
import json
from pathlib import Path

import pytest
import torch

from b2b.tools.cli import main
from b2b.data import epoch_batches, length_batches

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("batch_size", [1, 7, 8, 32, 64])
def test_every_pass_holds_a_batch_whatever_the_size(batch_size):
    """A pass over n examples always yields at least one batch of min(batch_size, n) distinct
    indices, so `next` on the endless sampler returns after at most one pass's work."""
    for n in range(1, 71):
        g = torch.Generator().manual_seed(n)
        batches = epoch_batches(list(range(n)), batch_size, g)
        size = min(batch_size, n)
        assert len(batches) == n // size >= 1, (n, batch_size)
        assert all(len(b) == size for b in batches)
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen)) and set(seen) <= set(range(n))
        sampler = length_batches(list(range(n)), batch_size, g)
        for _ in range(3):
            assert len(next(sampler)) == size


def test_batches_group_similar_lengths():
    g = torch.Generator().manual_seed(0)
    lengths = [i % 50 for i in range(640)]
    batches = epoch_batches(lengths, 8, g, pool=80)  # one pool: the whole pass sorted by length
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) <= 1


def test_empty_data_is_a_one_line_error():
    from b2b.errors import DataError

    with pytest.raises(DataError, match="no examples to batch"):
        epoch_batches([], 8, torch.Generator())


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 9, 24])
@pytest.mark.parametrize("level", [1, 2])
def test_reward_model_trains_on_a_handful_of_pairs(n, level, tmp_path, capsys):
    args = ["run", "--level", str(level), "--only-reward-model", "--data", str(DATA / f"prefs_english_{n}.csv"),
            "--out", str(tmp_path / "rm"), "--json"]
    assert main(args) == 0
    out = capsys.readouterr().out
    m = json.loads(out.strip().splitlines()[-1])
    assert m["train_pairs"] + m["test_pairs"] == n and m["train_pairs"] >= 1
    if m["test_pairs"] == 0:
        assert m["pair_accuracy"] is None and 0.0 <= m["train_pair_accuracy"] <= 1.0
        assert "leave none held out" in out or "fell in the held-out share" in out
    assert "gold_accuracy" not in m  # English prompts are not the tiny world's: no gold judge
    if n < 32:
        assert f"fewer than batch_size 32: each step uses all {m['train_pairs']}" in out
    assert (tmp_path / "rm" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 9, 24])
@pytest.mark.parametrize("algo", ["reinforce", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
def test_whole_pipeline_on_a_small_csv(n, algo, tmp_path, capsys):
    """Reward model, then a few RL steps of each algorithm, on a hand-written CSV."""
    out = tmp_path / "run"
    assert main(["run", "--data", str(DATA / f"prefs_english_{n}.csv"), "--algo", algo, "--steps", "3",
                 "--out", str(out), "--json"]) == 0
    res = _last_json(capsys)
    assert res["steps"] == 3 and res["peak_gold_mean"] is None
    assert isinstance(res["sft"]["proxy_mean"], float) and isinstance(res["final"]["proxy_mean"], float)
    assert res["evaluated_on"] in ("held-out prompts", "training prompts")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert (out / "policy" / "model.safetensors").exists()
