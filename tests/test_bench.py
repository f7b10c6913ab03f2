import json

import pytest

from b2b.tools.bench import markdown_table, step_stats
from b2b.tools.cli import main


def _step(gen, score, learn, length):
    return {"time/generate_s": gen, "time/score_s": score, "time/learn_s": learn,
            "time/step_s": gen + score + learn, "completions/mean_length": length}


def test_step_stats_drop_the_warm_up_and_take_medians():
    steps = [_step(9.0, 9.0, 9.0, 1.0),  # warm-up: must not count
             _step(1.0, 0.2, 0.5, 10.0), _step(2.0, 0.4, 0.3, 20.0), _step(4.0, 0.3, 0.4, 10.0)]
    s = step_stats(steps, warmup=1, batch_size=8)
    assert s["generate_s"] == 2.0 and s["score_s"] == 0.3 and s["learn_s"] == 0.4
    assert s["step_s"] == pytest.approx(2.7)  # median of 1.7, 2.7, 4.7: the split's medians need not add up
    assert s["tokens_per_s"] == pytest.approx(80.0)  # per step: 80, 80, 20 tokens/s
    assert s["completion_tokens"] == pytest.approx(40 / 3)
    with pytest.raises(ValueError, match="no measured steps"):
        step_stats(steps[:1], warmup=1, batch_size=8)


def test_bench_json_contract_with_trl_side_by_side(capsys):
    assert main(["bench", "--profile", "ci", "--algos", "reinforce", "rloo", "--batch-size", "8", "--k", "2",
                 "--max-new-tokens", "8", "--steps", "2", "--warmup", "1", "--vs-trl", "--repeat", "2",
                 "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert set(res["algos"]) == {"reinforce", "rloo"}
    for a in res["algos"].values():
        for key in ("step_s", "generate_s", "score_s", "learn_s", "tokens_per_s", "peak_mem_mb"):
            assert isinstance(a[key], float) and a[key] > 0, key
        assert a["completion_tokens"] <= 8
    for key in ("device", "torch", "threads", "batch_size", "k", "max_new_tokens"):
        assert key in res
    assert res["batch_size"] == 8 and res["k"] == 2 and res["max_new_tokens"] == 8
    assert res["lean_decode"] is True, "the tiny policy is a plain Llama: it samples through LlamaDecoder"
    assert res["trl_step_s"] > 0 and res["b2b_step_s"] == res["algos"]["rloo"]["step_s"]
    assert res["repeat"] == 2 and len(res["trl_ratio_rounds"]) == 2
    assert all(len(a["step_s_rounds"]) == 2 for a in res["algos"].values())
    # TRL's steps alternate with b2b's: one ratio per measured pair (2 rounds x 2 steps), the ratio
    # is their median (of 4: the mean of the middle two), each round's the median of its own 2
    pairs = res["trl_ratio_steps"]
    assert len(pairs) == 4 and res["trl_ratio"] == pytest.approx(sum(sorted(pairs)[1:3]) / 2)
    assert res["trl_ratio_rounds"] == pytest.approx([sum(pairs[:2]) / 2, sum(pairs[2:]) / 2])
    assert "| rloo |" in "\n".join(out) and "TRL RLOOTrainer" in markdown_table(res)
    # where the time goes: every phase against its floor, and TRL's step over b2b's RLOO floor
    assert res["limits"]["matmul_gflops"] > 0 and res["limits"]["bandwidth_gbs"] > 0 and res["prompt_tokens"] > 0
    for a in res["algos"].values():
        acc = a["account"]
        assert all(0 < acc[p]["floor_s"] and acc[p]["gflop"] > 0 for p in ("generate", "score", "learn"))
        assert acc["floor_s"] == pytest.approx(sum(acc[p]["floor_s"] for p in ("generate", "score", "learn")), abs=1e-3)
    assert res["trl_ratio_ceiling"] == pytest.approx(res["trl_step_s"] / res["algos"]["rloo"]["account"]["floor_s"])
    assert "| rloo | learn |" in "\n".join(out)


@pytest.mark.parametrize("args,msg", [(["--algos", "ppo"], "unknown 'ppo'"),
                                      (["--algos", "reinforce", "--vs-trl"], "keep rloo"),
                                      (["--steps", "0"], "--steps >= 1"),
                                      (["--repeat", "0"], "--repeat >= 1"),
                                      (["--k", "3"], "groups of k=3")])
def test_bench_bad_flags_are_one_line_errors(args, msg, capsys):
    assert main(["bench", "--profile", "ci", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and msg in err and "\n" not in err


def test_sampling_bench_json_contract(capsys):
    """`b2b bench --sampling`: b2b's sampler and transformers' generate on the same prompts, in turns."""
    assert main(["bench", "--sampling", "--profile", "ci", "--batch-size", "8", "--max-new-tokens", "8",
                 "--repeat", "2", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert res["batch_size"] == 8 and res["max_new_tokens"] == 8 and res["rounds"] == 2
    assert res["b2b_tokens_per_s"] > 0 and res["hf_tokens_per_s"] > 0
    assert res["ratio"] == pytest.approx(res["b2b_tokens_per_s"] / res["hf_tokens_per_s"])
    assert 1 <= res["b2b_mean_length"] <= 8 and 1 <= res["hf_mean_length"] <= 8
    assert "b2b / transformers" in out[-2]


def test_bench_of_a_new_policy_scores_with_a_fresh_head_and_says_so(tmp_path, monkeypatch, tiny_dir, capsys):
    """A policy without a course reward model (here the tiny policy under another name) is not
    made to train one first: the bench scores with an untrained head of the same size."""
    import shutil

    from b2b.config import get_profile
    from b2b.tools.bench import bench_reward_model

    other = tmp_path / "other-policy"
    shutil.copytree(tiny_dir, other)
    monkeypatch.chdir(tmp_path)
    rm = bench_reward_model(get_profile("tiny", policy=str(other)), "cpu")
    assert rm.config.num_labels == 1
    assert "fresh score head" in capsys.readouterr().out
    shipped = bench_reward_model(get_profile("tiny"), "cpu")
    assert shipped.config.num_labels == 1 and "fresh" not in capsys.readouterr().out


def test_the_flop_account_by_hand():
    """`model_shape` counts a Llama block's matrices; `phase_flops` charges each phase its tokens:
    2 x block parameters per token forward, the LM head on completion positions only, backward twice
    the forward (three times with checkpointing), one forward per epoch more for the rollout policy's
    own log-probs when a batch takes several updates, the reference only when the run keeps one."""
    from types import SimpleNamespace

    from b2b.rl_config import RLConfig
    from b2b.tools.bench import model_shape, phase_account, phase_flops

    cfg = SimpleNamespace(hidden_size=4, intermediate_size=6, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=2, vocab_size=10)
    shape = model_shape(cfg)
    # per layer: q and o 4 x 4 each, k and v 4 x 2 each, gate / up / down 4 x 6 each: 32 + 16 + 72
    assert shape["block_params"] == 2 * 120 and shape["head_params"] == 40
    rm_shape = {**shape, "block_params": 100}
    # B = 2 rollouts, 3 prompt + 5 completion tokens: forward = 2*240*2*8 + 2*40*2*5 = 7680 + 800
    fwd = 2 * 240 * 2 * 8 + 2 * 40 * 2 * 5
    base = RLConfig(algo="rloo", batch_size=2, k=2, kl_coef=0.1)
    f = phase_flops(base, shape, rm_shape, 3.0, 5.0)
    assert f["generate_s"] == 2 * 240 * 2 * 8 + 2 * 40 * 2 * 6  # the head also on the prompt's last position
    assert f["score_s"] == 2 * 100 * 2 * 8 + fwd  # reward model + reference
    assert f["learn_s"] == 3 * fwd
    no_ref = phase_flops(RLConfig(algo="reinforce", batch_size=2, kl_coef=0.0, track_kl=False), shape, rm_shape, 3, 5)
    assert no_ref["score_s"] == 2 * 100 * 2 * 8
    ckpt = phase_flops(RLConfig(algo="rloo", batch_size=2, k=2, gradient_checkpointing=True), shape, rm_shape, 3, 5)
    assert ckpt["learn_s"] == 4 * fwd
    pp = RLConfig(algo="reinforce_pp", batch_size=4, ppo_epochs=2, minibatches=2)
    assert phase_flops(pp, shape, rm_shape, 3, 5)["learn_s"] == 2 * 3 * 2 * fwd + 2 * fwd
    one = RLConfig(algo="reinforce_pp", batch_size=2, ppo_epochs=1, minibatches=1)
    assert phase_flops(one, shape, rm_shape, 3, 5)["learn_s"] == 3 * fwd  # its first update's forward serves
    # the account: each phase at the matmul rate; sampling no faster than reading the weights per token
    stats = {"generate_s": 1.0, "score_s": 0.5, "learn_s": 2.0, "completion_tokens": 5.0}
    limits = {"matmul_gflops": 1e-6, "bandwidth_gbs": 1e-6}  # 1,000 FLOP/s, 1,000 bytes/s
    acc = phase_account(stats, base, shape, rm_shape, 3.0, limits)
    assert acc["score"]["floor_s"] == pytest.approx(f["score_s"] / 1000, rel=1e-3)
    assert acc["generate"]["floor_s"] == pytest.approx(max(f["generate_s"] / 1000, 5 * 4 * 280 / 1000), rel=1e-3)
    assert acc["learn"]["of_floor"] == pytest.approx(f["learn_s"] / 1000 / 2.0, rel=1e-3)
    assert acc["floor_s"] == pytest.approx(sum(acc[p]["floor_s"] for p in ("generate", "score", "learn")))


def test_reward_model_bench_json_contract(capsys):
    """`b2b bench --reward-model`: the reward model's training step, its padding and its FLOP floor."""
    assert main(["bench", "--reward-model", "--profile", "ci", "--reward-batch-size", "4", "--steps", "2",
                 "--warmup", "1", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert res["batch_size"] == 4 and res["steps"] == 2 and res["level"] == 1
    assert res["step_s"] >= res["forward_backward_s"] > 0 and res["optimizer_s"] > 0
    assert 0 < res["real_tokens"] <= res["padded_tokens"]
    assert 0 < res["floor_s"] and res["gflops"] == pytest.approx(res["gflop"] / res["step_s"], rel=0.01)
    assert res["pairs_per_s"] == pytest.approx(4 / res["step_s"], rel=0.01)
    assert "pairs/s" in out[-2]
