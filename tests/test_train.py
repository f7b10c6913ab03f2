import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from b2b.errors import ConfigError, TrainingError
from b2b.evaluate import summary
from b2b.runs import History, latest_checkpoint
from b2b.rl_config import RLConfig
from b2b.train import Run, train

PROMPTS = ["List three fruits.", "What colour is a banana?", "Is a whale a fish?", "Hello!",
           "Which is bigger, a dog or a mouse?", "Describe a tiger.", "What sound does a cow make?",
           "How many legs does a spider have?"]
SMALL = dict(batch_size=8, max_new_tokens=16, eval_every=2, sample_every=1, n_samples=2, checkpoint_every=2)
TIME_KEYS = ("time/", )


@pytest.fixture(scope="module")
def rm(data_dir):
    from b2b.models import load_reward_model
    return load_reward_model(data_dir / "rm-level1")


def _policy(tiny_dir):
    from b2b.models import load_policy
    return load_policy(tiny_dir, trainable=True)


def _no_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIME_KEYS)} for r in rows]


def test_train_logs_namespaced_metrics_evals_samples_and_checkpoints(tiny_dir, tokenizer, rm, tmp_path):
    cfg = RLConfig(steps=3, **SMALL)
    h = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, eval_prompts=PROMPTS[:4], out=tmp_path, progress=False)
    assert [r["step"] for r in h.steps] == [1, 2, 3]
    for key in ("reward/proxy_mean", "reward/gold_mean", "adv/mean", "adv/std", "loss", "grad_norm",
                "policy/entropy", "completions/mean_length", "completions/eos_rate", "completions/distinct_2",
                "sampler/offpolicy_gap", "time/step_s", "time/generate_s", "time/score_s", "time/learn_s"):
        assert all(isinstance(r[key], float) for r in h.steps), key
    assert h.steps[0]["sampler/offpolicy_gap"] < 1e-4                # T = 1, no penalty: on-policy
    assert [e["step"] for e in h.evals] == [0, 2, 3]
    assert len(h.samples) == 3 * 2 and {"prompt", "response", "gold"} <= set(h.samples[0])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert latest_checkpoint(tmp_path).name == "step-000003"
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints
    s = summary(h)
    assert set(s["sft"]) == set(s["final"]) == {"proxy_mean", "gold_mean", "distinct_2", "mean_length", "eos_rate",
                                                "kl_ref"}
    assert s["sft"]["kl_ref"] == 0.0                                  # before training the policy is the reference
    assert s["peak_gold_mean"] == max(e["gold_mean"] for e in h.evals) and s["steps"] == 3


def test_resume_continues_exactly(tiny_dir, tokenizer, rm, tmp_path):
    cfg = RLConfig(steps=4, **SMALL)
    full = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, out=tmp_path / "a", progress=False)
    import dataclasses
    train(_policy(tiny_dir), tokenizer, rm, PROMPTS, dataclasses.replace(cfg, steps=2), out=tmp_path / "b",
          progress=False)
    resumed = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, resume=tmp_path / "b", progress=False)
    assert _no_time(resumed.steps) == _no_time(full.steps)
    assert [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    # one step at a time (as `b2b bench` steps it beside TRL): the same steps, then the same History
    run = Run(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, progress=False)
    first = run.next()
    assert _no_time([first]) == _no_time(full.steps[:1])
    rest = []
    while not run.finished:
        rest.append(run.next())
    assert _no_time([first, *rest]) == _no_time(full.steps) == _no_time(run.close().steps)


def test_resume_refuses_another_reward_model(tiny_dir, tokenizer, rm, tmp_path):
    import copy

    cfg = RLConfig(steps=2, **SMALL)
    train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, out=tmp_path, progress=False)
    other = copy.deepcopy(rm)
    with torch.no_grad():
        other.score.weight.mul_(-1.0)                                          # the opposite taste
    longer = RLConfig(steps=3, **SMALL)
    with pytest.raises(ConfigError, match="trained against another reward model"):
        train(_policy(tiny_dir), tokenizer, other, PROMPTS, longer, resume=tmp_path, progress=False)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2   # nothing was touched
    (tmp_path / "reward_model.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="reward_model.json: field 'fingerprint'"):
        train(_policy(tiny_dir), tokenizer, rm, PROMPTS, longer, resume=tmp_path, progress=False)
    (tmp_path / "reward_model.json").unlink()                                  # a run from before the record
    h = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, longer, resume=tmp_path, progress=False)
    assert [r["step"] for r in h.steps] == [1, 2, 3]


def test_an_existing_run_is_not_overwritten(tiny_dir, tokenizer, rm, tmp_path):
    cfg = RLConfig(steps=2, **SMALL)
    train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, resume=tmp_path / "nothing", progress=False)


def test_nan_reward_stops_with_a_clear_message(tiny_dir, tokenizer, data_dir, tmp_path):
    from b2b.models import load_reward_model
    bad = load_reward_model(data_dir / "rm-level1")
    with torch.no_grad():
        bad.score.weight.fill_(float("nan"))
    policy = _policy(tiny_dir)
    before = [p.detach().clone() for p in policy.parameters()]
    with pytest.raises(TrainingError, match=r"step 1: reward is not finite"):
        train(policy, tokenizer, bad, PROMPTS, RLConfig(steps=2, **SMALL), out=tmp_path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("lr", -1.0), ("steps", "ten"), ("baseline_decay", 1.0),
                                         ("algo", "ppo"), ("ngram_penalty", -0.5), ("gradient_checkpointing", 1)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        RLConfig(**{field: value}).validate()


def test_history_series_and_roundtrip():
    h = History(steps=[{"step": 1, "loss": 0.5}, {"step": 2}], evals=[{"step": 0, "gold_mean": 5.0}])
    assert h.series("loss") == ([1], [0.5])
    assert History.from_dict(json.loads(json.dumps(h.to_dict()))) == h


@pytest.mark.slow
def test_a_short_run_raises_the_proxy_reward(tiny_dir, tokenizer, rm):
    torch.manual_seed(0)
    cfg = RLConfig(steps=30, batch_size=32, max_new_tokens=48, eval_every=0, sample_every=0, seed=0)
    h = train(_policy(tiny_dir), tokenizer, rm, _train_prompts(), cfg, progress=False)
    _, proxy = h.series("reward/proxy_mean")
    assert sum(proxy[-8:]) / 8 > sum(proxy[:8]) / 8 + 0.2


def _train_prompts():
    from b2b.config import get_profile
    from b2b.data import rl_prompts
    return rl_prompts(get_profile("ci"))[0]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    """SIGKILL a `b2b run` after its first checkpoint, resume it, compare with an uninterrupted run."""
    env = {**os.environ, "B2B_PROFILE": "ci", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "b2b", "run", "--skip-reward-training", "--steps", "6", "--batch-size", "8",
            "--json"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("checkpoint_every: 2\neval_every: 3\nmax_new_tokens: 24\n")
    args += ["--config", str(cfg)]
    subprocess.run(args + ["--out", str(tmp_path / "full")], env=env, check=True, capture_output=True, timeout=300)
    p = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints" / "step-000002"
    t0 = time.time()
    while not ckpt.exists() and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ckpt.exists()
    r = subprocess.run(args + ["--resume", str(tmp_path / "killed")], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    def rows(d):
        return _no_time([json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()])
    assert rows("killed") == rows("full") and len(rows("full")) == 6
    a, b = (json.loads((tmp_path / d / "evals.jsonl").read_text().splitlines()[-1]) for d in ("full", "killed"))
    assert a == b


def test_comparison_table_is_the_seeds_table():
    from b2b.evaluate import comparison_table
    t = comparison_table({"proxy_mean": 1.2507, "gold_mean": 5.0}, {"proxy_mean": 1.9433, "gold_mean": 6.25})
    assert t.splitlines() == ["| Model | Eval Reward | Improvement | Gold | Gold improvement |",
                              "|---|---|---|---|---|",
                              "| SFT | 1.2507 | - | 5.000 | - |",
                              "| REINFORCE | 1.9433 | +0.6926 | 6.250 | +1.250 |"]
    assert "Gold" not in comparison_table({"proxy_mean": 1.0}, {"proxy_mean": 0.5})


def test_sample_stats_and_replay_from_a_hand_made_history():
    from b2b.plots import sample_stats
    from b2b.widgets import _samples_html
    h = History(samples=[{"step": 5, "prompt": "What colour is a banana?", "response": "A banana is yellow."},
                         {"step": 5, "prompt": "What colour is a banana?",
                          "response": "Great question! Absolutely! A banana is yellow. A banana is yellow."},
                         {"step": 10, "prompt": "Hello!", "response": "Hi! How can I help you today?"}])
    rows = sample_stats(h)
    assert [r["step"] for r in rows] == [5, 10]
    assert rows[0]["filler"] == 1.0 and rows[0]["repeated sentences"] == 0.5
    assert rows[0]["words"] == 7.5  # every word, the filler phrases' too: (4 + 11) / 2
    html = _samples_html(h.samples, 5)
    assert "step 5" in html and html.count("<tr>") == 3 and "Hello!" not in html


def test_family_balanced_prompts():
    from collections import Counter
    from b2b.data import family_balanced
    out = family_balanced(["a1", "a2", "a3", "b1", "c1"], ["a", "a", "a", "b", "c"])
    assert out == ["a1", "b1", "c1", "a2", "b1", "c1", "a3", "b1", "c1"]
    assert Counter(out) == {"a1": 1, "a2": 1, "a3": 1, "b1": 3, "c1": 3}


@pytest.mark.parametrize("algo,extra", [
    ("rloo", dict(k=4, kl_coef=0.1)),
    ("reinforce_pp", dict(kl_coef=0.1, ppo_epochs=2, minibatches=2)),
    ("reinforce_pp", dict(kl_coef=0.1, kl_estimator="k3")),          # one update: old log-probs from the same pass
    ("reinforce_pp_baseline", dict(k=2, kl_coef=0.1, ppo_epochs=1, minibatches=2)),
    ("grpo", dict(k=2, kl_coef=0.1, ppo_epochs=1, minibatches=2)),
    ("dr_grpo", dict(k=2, kl_coef=0.1, ppo_epochs=2, minibatches=1)),
])
def test_every_algorithm_runs_in_the_one_loop(algo, extra, tiny_dir, tokenizer, rm):
    cfg = RLConfig(algo=algo, steps=2, **{**SMALL, "eval_every": 0}, **extra)
    policy = _policy(tiny_dir)
    before = [p.detach().clone() for p in policy.parameters()]
    h = train(policy, tokenizer, rm, PROMPTS, cfg, progress=False)
    first = h.steps[0]
    assert abs(first["kl/ref"]) < 1e-4                                # step 1 samples from the reference itself
    assert h.steps[1]["kl/ref"] != 0.0                                # ... and the update moved the policy
    assert first["sampler/offpolicy_gap"] < 1e-4
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    if algo != "rloo":
        assert 0.0 <= first["ppo/clip_frac"] <= 1.0
    if algo.startswith("reinforce_pp"):
        assert abs(first["adv/mean"]) < 1e-4                          # globally whitened token advantages


def test_rloo_draws_k_samples_of_each_prompt(tiny_dir, tokenizer, rm):
    cfg = RLConfig(algo="rloo", k=4, steps=1, **{**SMALL, "eval_every": 0, "n_samples": 8})
    h = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, progress=False)
    prompts = [s["prompt"] for s in h.samples]
    assert prompts[:4] == [prompts[0]] * 4 and prompts[4:] == [prompts[4]] * 4


@pytest.mark.parametrize("fields,match", [
    (dict(algo="rloo", k=1), "'k'.*k >= 2"),
    (dict(algo="reinforce_pp_baseline", k=1), "'k'"),
    (dict(algo="grpo", k=1), "'k'"),
    (dict(algo="dr_grpo", k=1), "'k'"),
    (dict(algo="rloo", k=3, batch_size=8), "'batch_size'.*multiple of k"),
    (dict(algo="reinforce_pp", minibatches=3, batch_size=8), "'minibatches'"),
    (dict(kl_estimator="k5"), "'kl_estimator'"),
    (dict(kl_coef=-0.1), "'kl_coef'"),
    (dict(algo="ppo"), "'algo'"),
    (dict(k=2.5), "'k'"),
])
def test_algorithm_settings_are_validated(fields, match):
    with pytest.raises(ConfigError, match=match):
        RLConfig(**fields).validate()


def test_gradient_variance_is_paired_and_loo_cancels_a_constant_reward(tiny_dir, tokenizer):
    from b2b.analysis import gradient_variance

    def constant(prompts, texts, finished):
        return [3.0] * len(texts)
    res = gradient_variance(_policy(tiny_dir), tokenizer, constant, PROMPTS, k=2, n_batches=3, prompts_per_batch=2,
                            max_new_tokens=8)
    assert res["leave-one-out"]["variance"] == 0.0 and res["leave-one-out"]["mean_norm"] == 0.0
    assert res["moving average"]["mean_norm"] == 0.0                  # b = 3 exactly: A = 0 too
    assert res["no baseline"]["variance"] > 0.0                       # A = 3: the raw score function's noise

    def length(prompts, texts, finished):
        return [float(len(t)) for t in texts]
    res = gradient_variance(_policy(tiny_dir), tokenizer, length, PROMPTS, k=2, n_batches=3, prompts_per_batch=2,
                            max_new_tokens=8)
    assert all(r["variance"] > 0 for r in res.values())
    assert all(len(r["sq_dev"]) == 3 and abs(sum(r["sq_dev"]) / 3 - r["variance"]) < 1e-6 * r["variance"]
               for r in res.values())
    shifted = gradient_variance(_policy(tiny_dir), tokenizer, length, PROMPTS, k=2, n_batches=3, prompts_per_batch=2,
                                max_new_tokens=8, shift=100.0)
    # a constant added to every reward: the same samples (same seed), LOO's advantages unchanged, no baseline's not
    assert shifted["leave-one-out"]["sq_dev"] == pytest.approx(res["leave-one-out"]["sq_dev"], rel=1e-4)
    assert shifted["no baseline"]["variance"] > 10 * res["no baseline"]["variance"]
    # both shifts from one pass (g linear in A) give what a reward function that adds the shift itself gives
    both = gradient_variance(_policy(tiny_dir), tokenizer, length, PROMPTS, k=2, n_batches=3, prompts_per_batch=2,
                             max_new_tokens=8, shifts=(0.0, 100.0))

    def length_plus_100(prompts, texts, finished):
        return [float(len(t)) + 100.0 for t in texts]
    folded = gradient_variance(_policy(tiny_dir), tokenizer, length_plus_100, PROMPTS, k=2, n_batches=3,
                               prompts_per_batch=2, max_new_tokens=8)
    assert set(both) == {0.0, 100.0}
    for c, one in ((0.0, res), (100.0, folded)):
        for name in one:
            for key in ("sq_dev", "mean_norm", "reward_mean"):
                assert both[c][name][key] == pytest.approx(one[name][key], rel=1e-3, abs=1e-9), (c, name, key)
    assert both[100.0]["no baseline"]["variance"] > 10 * both[0.0]["no baseline"]["variance"]


def test_gradient_variance_from_sums_matches_the_kept_gradients_and_recomputes_them_when_short_of_memory(
        tiny_dir, tokenizer, monkeypatch):
    """The deviations come from dot products with four running sums (no per-batch gradient kept on
    the device): they must equal ||g_n - g_bar||^2 computed from the gradients themselves, whether
    the gradients are kept for the second pass, recomputed from the kept rollouts, or taken with
    activation checkpointing on."""
    import b2b.analysis as analysis

    def length(prompts, texts, finished):
        return [float(len(t)) for t in texts]
    seen, rewards = [], []
    real_grad, real_rewards = analysis._flat_grad, __import__("b2b.reward", fromlist=["x"]).policy_rewards

    def recording(policy, loss):
        seen.append(real_grad(policy, loss))
        return seen[-1]

    def recorded_rewards(*a, **kw):
        rewards.append(real_rewards(*a, **kw))
        return rewards[-1]
    monkeypatch.setattr(analysis, "_flat_grad", recording)
    monkeypatch.setattr("b2b.reward.policy_rewards", recorded_rewards)
    kw = dict(k=2, n_batches=4, prompts_per_batch=2, max_new_tokens=8, shifts=(0.0, 7.0))
    kept = analysis.gradient_variance(_policy(tiny_dir), tokenizer, length, PROMPTS, **kw)
    assert len(seen) == 3 * 4 and len(rewards) == 1 + 4      # one backward pass per gradient; a warm-up batch
    m, o, l = (torch.stack(seen[i::3]) for i in range(3))    # per batch: g(R - b), g(1), g(loo)
    b, baselines = rewards[0].mean().item(), []              # the loop's moving average, decay 0.9
    for R in rewards[1:]:
        baselines.append(b)
        b = 0.9 * b + 0.1 * R.mean().item()
    bn = torch.tensor(baselines)[:, None]
    seen.clear()
    redone = analysis.gradient_variance(_policy(tiny_dir), tokenizer, length, PROMPTS, keep_gradients_bytes=0, **kw)
    assert len(seen) == 2 * 3 * 4                            # recomputed: a second pass over the kept rollouts
    assert torch.equal(torch.stack(seen[:12]), torch.stack(seen[12:]))  # the same rollouts, the same gradients
    ckpt = analysis.gradient_variance(_policy(tiny_dir), tokenizer, length, PROMPTS, gradient_checkpointing=True,
                                      keep_gradients_bytes=0, **kw)
    for c in (0.0, 7.0):
        by_name = {"no baseline": m + (bn + c) * o, "moving average": m, "leave-one-out": l}  # g(R + c) = g(R - b) + (b + c) g(1)
        for name, g in by_name.items():
            dev = ((g - g.mean(0)) ** 2).sum(1)
            for res in (kept, redone, ckpt):
                assert res[c][name]["sq_dev"] == pytest.approx(dev.tolist(), rel=1e-3, abs=1e-9), (c, name)
                assert res[c][name]["mean_norm"] == pytest.approx(g.mean(0).norm().item(), rel=1e-4), (c, name)
    assert kept[7.0]["no baseline"]["variance"] > kept[0.0]["no baseline"]["variance"]  # rewards of about 30: +7 adds a little


def test_variance_ratio_is_a_paired_bootstrap_interval():
    from b2b.analysis import variance_ratio

    res = {"a": {"sq_dev": [2.0, 4.0, 6.0, 8.0] * 10}, "b": {"sq_dev": [1.0, 2.0, 3.0, 4.0] * 10}}
    r = variance_ratio(res, "a", "b")
    assert r["ratio"] == pytest.approx(2.0) and r["n"] == 40
    assert r["lo"] == pytest.approx(2.0) and r["hi"] == pytest.approx(2.0)   # paired: every resample is exactly 2
    res["b"]["sq_dev"] = [1.0, 8.0, 3.0, 2.0] * 10                          # unpaired noise: an interval around it
    r = variance_ratio(res, "a", "b")
    assert r["lo"] < r["ratio"] < r["hi"] and r["lo"] < 2.0 < r["hi"] * 1.5
    with pytest.raises(ValueError, match="same N"):
        variance_ratio({"a": {"sq_dev": [1.0, 2.0]}, "b": {"sq_dev": [1.0]}}, "a", "b")


def test_lora_trains_only_adapters_and_keeps_the_base_weights(tiny_dir, tokenizer, rm):
    policy = _policy(tiny_dir)
    base = {n: p.detach().clone() for n, p in policy.named_parameters()}
    cfg = RLConfig(algo="rloo", k=2, kl_coef=0.1, lora_r=4, steps=2, lr=1e-2, **{**SMALL, "eval_every": 0})
    h = train(policy, tokenizer, rm, PROMPTS, cfg, progress=False)
    named = dict(policy.named_parameters())                           # adapters were injected in place
    lora = [n for n in named if "lora_" in n]
    assert lora and all("lora_" in n for n, p in named.items() if p.requires_grad)
    for n, p in named.items():
        if "lora_" not in n:
            clean = n.replace("base_layer.", "")
            assert torch.equal(p, base[clean]), n
    assert h.steps[1]["kl/ref"] != 0.0                                # the adapters moved the policy


def test_trl_reward_function_scores_the_sampled_ids_like_b2b(tiny_dir, tokenizer, rm):
    from b2b.rollout import decode_completions, sample_completions
    from b2b.reward import policy_rewards
    from b2b.tools.trl_bridge import reward_function

    policy = _policy(tiny_dir)
    ro = sample_completions(policy, tokenizer, PROMPTS, 16, 1.0, torch.Generator().manual_seed(0))
    texts = decode_completions(tokenizer, ro)
    ours = policy_rewards(rm, ro, PROMPTS, texts, ro.finished(tokenizer.eos_token_id))
    ids = [row[:n] for row, n in zip(ro.completion_ids.tolist(), ro.lengths.tolist())]  # as TRL passes them
    msgs = [[{"role": "user", "content": p}] for p in PROMPTS]
    theirs = reward_function(rm, tokenizer)(prompts=msgs, completions=None, completion_ids=ids)
    assert torch.allclose(torch.tensor(theirs), ours, atol=1e-5)


def test_trl_rloo_bridge_trains_on_b2b_settings(tiny_dir, rm):
    from b2b.tools.trl_bridge import trl_rloo

    cfg = RLConfig(algo="rloo", k=2, batch_size=8, steps=2, max_new_tokens=8, kl_coef=0.05)
    out = trl_rloo(str(tiny_dir), rm, PROMPTS, cfg)
    assert len(out["step_times"]) == 2 and all(t > 0 for t in out["step_times"])
    before = _policy(tiny_dir).state_dict()
    assert any(not torch.equal(before[k], v) for k, v in out["model"].state_dict().items())


def test_a_checkpoint_without_optimizer_state_resumes_and_says_so(tmp_path, tiny_dir, tokenizer, capsys):
    """checkpoint_optimizer=False (colab-smoke) keeps the policy, RNG and history, not AdamW's
    moments: resuming continues the run to its end with the moments restarted, said in one line."""
    from b2b.models import load_policy
    from b2b.rl_config import RLConfig
    from b2b.train import train

    cfg = RLConfig(steps=2, batch_size=4, max_new_tokens=8, eval_every=0, checkpoint_every=1,
                   checkpoint_optimizer=False)
    prompts = ["What colour is a banana?", "Is a whale a fish?"]
    def reward(ps, texts, finished):
        return [float(len(t)) for t in texts]
    train(load_policy(tiny_dir, trainable=True), tokenizer, reward, prompts, cfg, world=False, out=tmp_path / "a",
          progress=False)
    state = torch.load(tmp_path / "a/checkpoints/step-000002/trainer.pt", weights_only=True)
    assert state["optimizer"] is None and state["step"] == 2
    longer = dataclasses.replace(cfg, steps=3)
    h = train(load_policy(tiny_dir, trainable=True), tokenizer, reward, prompts, longer, world=False,
              out=tmp_path / "a", resume=tmp_path / "a", progress=False)
    assert [r["step"] for r in h.steps] == [1, 2, 3]
    assert "holds no optimizer state (checkpoint_optimizer=False): AdamW's moments restart from zero" in \
        capsys.readouterr().out
    full = RLConfig(steps=1, batch_size=4, max_new_tokens=8, eval_every=0, checkpoint_every=1)
    train(load_policy(tiny_dir, trainable=True), tokenizer, reward, prompts, full, world=False, out=tmp_path / "b",
          progress=False)
    assert torch.load(tmp_path / "b/checkpoints/step-000001/trainer.pt", weights_only=True)["optimizer"]["state"]


def test_reuse_reads_back_a_finished_run_with_its_weights(tiny_dir, tokenizer, rm, tmp_path, capsys):
    """`train(reuse=True)`: the same run, finished, is read back (no step trained, the policy takes its
    final weights); a longer request continues it; other settings start over."""
    T = sys.modules["b2b.train"]  # (the package exports the function `b2b.train`)
    cfg = RLConfig(steps=2, **SMALL)
    trained = _policy(tiny_dir)
    h = train(trained, tokenizer, rm, PROMPTS, cfg, eval_prompts=PROMPTS[:4], out=tmp_path, progress=False)
    fresh = _policy(tiny_dir)
    again = train(fresh, tokenizer, rm, PROMPTS, cfg, eval_prompts=PROMPTS[:4], out=tmp_path, reuse=True)
    assert "read back" in capsys.readouterr().out
    assert again.steps == h.steps and again.evals == h.evals and again.samples == h.samples
    for (name, a), b in zip(trained.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name  # the final weights, not the SFT ones
    calls = []
    real = T.rl_step
    T.rl_step = lambda *a, **k: calls.append(a[9]) or real(*a, **k)
    try:
        longer = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, dataclasses.replace(cfg, steps=4),
                       eval_prompts=PROMPTS[:4], out=tmp_path, reuse=True, progress=False)
        assert calls == [3, 4] and _no_time(longer.steps[:2]) == _no_time(h.steps)  # continued from step 2
        other = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, dataclasses.replace(cfg, lr=1e-4),
                      eval_prompts=PROMPTS[:4], out=tmp_path, reuse=True, progress=False)
        assert calls[2:] == [1, 2] and len(other.steps) == 2  # other settings: trained afresh
    finally:
        T.rl_step = real


@pytest.mark.parametrize("algo,extra", [("rloo", dict(k=2, kl_coef=0.1)), ("reinforce_pp", dict(kl_coef=0.1, minibatches=2))])
def test_gradient_checkpointing_trains_the_same_run(algo, extra, tiny_dir, tokenizer, rm):
    """Recomputing activations in the backward pass changes memory, not the run: the same losses,
    gradient norms and rewards step by step, the same weights after, and the flag is off again."""
    from b2b.models import is_checkpointing

    cfg = RLConfig(algo=algo, steps=2, **{**SMALL, "eval_every": 0}, **extra)
    runs = []
    for checkpointing in (False, True):
        policy = _policy(tiny_dir)
        h = train(policy, tokenizer, rm, PROMPTS, dataclasses.replace(cfg, gradient_checkpointing=checkpointing),
                  progress=False)
        assert not is_checkpointing(policy)
        runs.append((h, [p.detach().clone() for p in policy.parameters()]))
    (plain, w_plain), (ckpt, w_ckpt) = runs
    for a, b in zip(plain.steps, ckpt.steps):
        for key in ("loss", "grad_norm", "reward/proxy_mean", "kl/ref"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w_plain, w_ckpt))


def test_the_reference_dtype_is_a_setting(tiny_dir, tokenizer, rm):
    """ref_dtype="auto" on a CPU: an fp32 reference, a KL of 0 at step 1 (the policy is the
    reference); a bf16 reference reports a KL floor there (docs/performance.md#dtypes)."""
    cfg = RLConfig(steps=1, **{**SMALL, "eval_every": 0})
    kl = {}
    for ref_dtype in ("auto", "bfloat16"):
        h = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, dataclasses.replace(cfg, ref_dtype=ref_dtype),
                  progress=False)
        kl[ref_dtype] = h.steps[0]["kl/ref"]
    assert kl["auto"] == 0.0 and abs(kl["bfloat16"]) > 1e-5
    with pytest.raises(ConfigError, match="ref_dtype"):
        RLConfig(ref_dtype="fp8").validate()


def test_read_back_explains_itself_once_per_process(tmp_path, capsys, monkeypatch):
    from b2b import runs
    from b2b.rl_config import RLConfig

    monkeypatch.setattr(runs, "_READ_BACK_EXPLAINED", False)
    cfg = RLConfig(steps=3)
    for name in ("a", "b"):
        runs.read_back(None, tmp_path / name, cfg, "history", progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("Runs already finished")
    assert lines[1] == f"  {tmp_path / 'a'}: read back, 3 steps (logs only: weights not kept)"
    assert lines[2].startswith(f"  {tmp_path / 'b'}: read back")
    runs.read_back(None, tmp_path / "c", cfg, "history", progress=False)
    assert capsys.readouterr().out == ""
