"""The shipped tiny SFT policy meets its targets (docs/tiny-world.md's figures use 512 prompts; 256 here)."""
import pytest

from b2b.data import heldout_prompts
from b2b.config import get_profile
from b2b.evaluate import evaluate_policy


@pytest.mark.slow
def test_shipped_policy_targets(policy, tokenizer):
    prompts = heldout_prompts(get_profile("tiny"), 256)
    res = evaluate_policy(policy, tokenizer, prompts, max_new_tokens=64, temperature=1.0, seed=0)
    assert res["eos_rate"] >= 0.95
    assert 4.0 <= res["gold_mean"] <= 6.0, "room for RL to improve, but a working policy"
    assert res["distinct_2"] >= 0.8 * res["reference_distinct_2"], "keeps the data's diversity"
    texts = [s["response"] for s in res["samples"]]
    assert len(set(texts)) > 0.5 * len(texts), "not one answer for every prompt"
