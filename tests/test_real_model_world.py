"""The real model in the tiny world (`tiny-smollm2`) on SmolLM2-135M-Instruct's real weights: `b2b sft`,
the tiny reward model reading SmolLM2's answers through its own tokenizer, one RL step of every
algorithm with gold, and `b2b run` in the profile. Part of the real-model suite (.ci/run's second
command); the tiny models' versions of the same checks are tests/test_retokenized.py."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from b2b.config import data_dir, ensure_smollm2

pytestmark = pytest.mark.real_model


def cli(*args, cwd, env=None) -> tuple[dict, str]:
    r = subprocess.run([sys.executable, "-m", "b2b", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=900, env={**os.environ, **(env or {})})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), out


@pytest.fixture(scope="module")
def smol_tiny(tmp_path_factory):
    """SmolLM2 fine-tuned for two steps of four demonstrations by `b2b sft`, measured before and after
    on four held-out prompts (the profile's own recipe is 60 steps of 16: docs/real-model.md)."""
    smol = ensure_smollm2()
    cwd = tmp_path_factory.mktemp("sft")
    res, out = cli("sft", "--policy", smol, "--out", "smol-tiny", "--steps", "2", "--batch-size", "4",
                   "--eval-prompts", "4", "--max-new-tokens", "8", "--json", cwd=cwd)
    assert res["steps"] == 2 and set(res["before"]) == set(res["after"]) == {"gold_mean", "eos_rate", "distinct_2",
                                                                             "mean_length"}
    assert 1.0 <= res["after"]["gold_mean"] <= 10.0 and math.isfinite(res["final_loss"])
    assert "before: gold" in out and "after:  gold" in out
    return cwd / "smol-tiny"


def test_the_tiny_reward_model_reads_smollm2s_answers_at_its_own_end_of_turn(smol_tiny):
    """SmolLM2's ids, decoded and re-encoded with the tiny tokenizer, score as the tiny reward model
    scores the same text encoded directly (finished: read at its end-of-turn token; cut off: at its
    last word), for a batch with padding on both sides."""
    from b2b.models import load_reward_model, load_tokenizer
    from b2b.reward import Retokenized, encode_responses, reward_scores, rollout_reward_scores
    from b2b.rollout import Rollout, completion_mask, encode_prompts

    smol_tok, rm_dir = load_tokenizer(smol_tiny), data_dir() / "rm-level1"
    rm, rm_tok = load_reward_model(rm_dir), load_tokenizer(rm_dir)
    prompts = ["What colour is a banana?", "Give me two animals with six legs."]
    answers, finished = ["A banana is yellow. I hope this helps!", "An ant and a bee have six legs"], [True, False]
    assert smol_tok(answers[0])["input_ids"] != rm_tok(answers[0])["input_ids"]
    ids, mask = encode_prompts(smol_tok, prompts)
    rows = [smol_tok(a, add_special_tokens=False)["input_ids"] + ([smol_tok.eos_token_id] if f else [])
            for a, f in zip(answers, finished)]
    comp = torch.full((2, max(map(len, rows)) + 1), smol_tok.eos_token_id)
    for i, r in enumerate(rows):
        comp[i, :len(r)] = torch.tensor(r)
    cmask = completion_mask(comp, smol_tok.eos_token_id)
    cmask[1, len(rows[1]):] = 0
    got = rollout_reward_scores(Retokenized(rm, rm_tok, smol_tok), Rollout(ids, mask, comp, cmask, torch.zeros(comp.shape)),
                                prompts=prompts)[:, 0]
    for i in range(2):
        seq = torch.tensor(encode_responses(rm_tok, [prompts[i]], [answers[i]], finished=[finished[i]]))
        assert (seq[0, -1] == rm_tok.eos_token_id) == finished[i]
        with torch.no_grad():
            assert torch.allclose(got[i], reward_scores(rm, seq, torch.ones_like(seq))[0, 0], atol=1e-5)


def test_one_step_of_every_algorithm_on_smollm2_in_the_tiny_world(smol_tiny, monkeypatch):
    """One step of each algorithm at the profile's recipe (4 rollouts of 8 tokens here): gold is
    measured on the real model's answers and every metric is finite."""
    from b2b.algorithms import names
    from b2b.data import rl_prompts
    from b2b.models import load_policy, load_tokenizer
    from b2b.recipes import rl_config
    from b2b.reward import Retokenized
    from b2b.reward_models import course_reward_model
    from b2b.config import get_profile
    from b2b.train import train

    monkeypatch.setenv("B2B_SMOLLM2_TINY", str(smol_tiny))
    profile = get_profile("tiny-smollm2")
    assert profile.world and profile.own_models and profile.reward_backbone.endswith("tiny-sft")
    rm = course_reward_model(profile)
    assert isinstance(rm, Retokenized)
    prompts, _, world = rl_prompts(profile)
    tok = load_tokenizer(profile.policy)
    policy = load_policy(profile.policy, trainable=True)
    for algo in names():
        cfg = rl_config(profile, algo, steps=1, batch_size=4, max_new_tokens=8, eval_every=0)
        h = train(policy, tok, rm, prompts, cfg, world=world, progress=False, profile=profile.name)
        row = h.steps[0]
        assert 1.0 <= row["reward/gold_mean"] <= 10.0, algo
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), algo


def test_b2b_run_in_the_tiny_smollm2_profile_reports_gold(smol_tiny, tmp_path):
    """The profile's whole `b2b run` (its shipped reward model, wrapped for SmolLM2's tokenizer, then RL),
    one step, with short held-out evaluations and no optimizer in its checkpoint."""
    (tmp_path / "small.yaml").write_text("max_new_tokens: 8\neval_prompts: 4\ncheckpoint_optimizer: false\n")
    res, out = cli("run", "--profile", "tiny-smollm2", "--skip-reward-training", "--steps", "1", "--batch-size", "4",
                   "--config", "small.yaml", "--out", "run", "--json", cwd=tmp_path,
                   env={"B2B_SMOLLM2_TINY": str(smol_tiny)})
    assert res["steps"] == 1 and res["sft"]["gold_mean"] is not None and res["final"]["gold_mean"] is not None
    assert "reward model: " in out and "rm-level1" in out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["policy"] == "smol-tiny" and saved["profile"] == "tiny-smollm2"
