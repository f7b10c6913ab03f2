"""The memory estimate, the refusal of a run that clearly cannot fit, and the colab settings against
the measured T4 table (docs/memory_colab.json, written by `b2b memory --json`)."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from b2b import memory
from b2b.errors import ConfigError
from b2b.rl_config import RLConfig

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "docs" / "memory_colab.json"
PROMPTS = ["List three fruits.", "What colour is a banana?", "Is a whale a fish?", "Hello!"]


def smollm2_shaped():
    """A model of SmolLM2-135M's config on the meta device: its shapes, no weights, no memory."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192)
    with torch.device("meta"):
        policy, ref = LlamaForCausalLM(cfg), LlamaForCausalLM(cfg)
        rm = LlamaForSequenceClassification(LlamaConfig(**{**cfg.to_dict(), "num_labels": 1}))
    return policy, ref.requires_grad_(False), rm.requires_grad_(False)


def LlamaForSequenceClassification_like(rm, num_labels: int):
    """`rm`'s shape with a `num_labels` score head, trainable (a reward model being trained)."""
    from transformers import LlamaForSequenceClassification

    with torch.device("meta"):
        return LlamaForSequenceClassification(type(rm.config)(**{**rm.config.to_dict(), "num_labels": num_labels}))


def test_estimate_counts_states_activations_and_checkpointing():
    policy, ref, rm = smollm2_shaped()
    n = sum(p.numel() for p in policy.parameters())
    cfg = RLConfig(batch_size=32, max_new_tokens=128)
    plain = memory.estimate_rl_step(policy, rm, ref, cfg, prompt_tokens=500)
    assert plain["states"] == 16 * n                                  # fp32 weights, gradients, two AdamW moments
    assert plain["frozen"] == 4 * n + 4 * sum(p.numel() for p in rm.parameters())
    ckpt = memory.estimate_rl_step(policy, rm, ref, dataclasses.replace(cfg, gradient_checkpointing=True), 500)
    assert ckpt["learn"] < plain["learn"] / 5 and ckpt["states"] == plain["states"]
    half = memory.estimate_rl_step(policy, rm, ref, dataclasses.replace(cfg, batch_size=16), 500)
    assert half["learn"] < plain["learn"] and half["total"] < plain["total"]
    two = memory.estimate_rl_step(policy, rm, ref, dataclasses.replace(cfg, algo="reinforce_pp", minibatches=2), 500)
    assert two["learn"] == pytest.approx(half["learn"], rel=1e-6)     # a minibatch's forward at a time
    assert plain["total"] == plain["states"] + plain["frozen"] + max(plain[k] for k in ("learn", "sample", "score"))


def test_colab_recipes_fit_a_t4_with_headroom_by_the_estimate_and_did_not_before():
    """Every colab stage's estimate keeps 25% of a T4 free; without gradient checkpointing (the old
    colab settings) the RL step and the reward model would not fit at all."""
    from b2b.config import get_profile
    from b2b.recipes import reward_config, rl_config
    from b2b.tools.memory import HEADROOM, T4_BYTES

    policy, ref, rm = smollm2_shaped()
    colab = get_profile("colab")
    for algo in ("reinforce", "rloo", "reinforce_pp", "reinforce_pp_baseline"):
        cfg = rl_config(colab, algo)
        assert memory.estimate_rl_step(policy, rm, ref, cfg, 560)["total"] <= (1 - HEADROOM) * T4_BYTES, algo
        old = dataclasses.replace(cfg, gradient_checkpointing=False)
        assert memory.estimate_rl_step(policy, rm, ref, old, 560)["total"] > T4_BYTES, algo
    for level in (1, 2):
        rcfg = reward_config(colab, level)
        assert memory.estimate_reward_training(rm.requires_grad_(True), rcfg)["total"] <= (1 - HEADROOM) * T4_BYTES
        old = dataclasses.replace(rcfg, gradient_checkpointing=False, micro_batch_size=None)
        assert memory.estimate_reward_training(rm, old)["total"] > T4_BYTES


def test_trl_check_and_gradient_variance_fit_a_t4_at_colab_size_and_did_not_before():
    """Notebook 01's TRL cross-check (micro-batches and checkpointing through TRL's own settings)
    and notebook 06's gradient-variance measurement (running sums, checkpointed log-probs) keep 25%
    of a T4 free by the estimate; the old settings (TRL at 16 pairs a pass without checkpointing at
    1,024 tokens; every flattened gradient kept, 40 batches of 64 answers) did not fit at all."""
    from b2b.config import get_profile
    from b2b.recipes import reward_config, trl_check_config, variance_settings
    from b2b.tools.memory import HEADROOM, T4_BYTES

    policy, ref, rm = smollm2_shaped()
    colab = get_profile("colab")
    trainable = LlamaForSequenceClassification_like(rm, 1)
    check = trl_check_config(colab, reward_config(colab, 1))
    assert check.micro_batch_size == 8 and check.gradient_checkpointing and check.limit == 512
    assert memory.estimate_reward_training(trainable, check)["total"] <= (1 - HEADROOM) * T4_BYTES
    old = dataclasses.replace(check, micro_batch_size=None, gradient_checkpointing=False, max_length=1024)
    assert memory.estimate_reward_training(trainable, old)["total"] > 2 * T4_BYTES
    kw = variance_settings(colab)
    assert kw["gradient_checkpointing"]
    need = memory.estimate_gradient_variance(policy, rm, kw["prompts_per_batch"], kw["k"], kw["max_new_tokens"], 560,
                                             kw["gradient_checkpointing"], kw["n_batches"])
    assert need["total"] <= (1 - HEADROOM) * T4_BYTES, need
    n = sum(p.numel() for p in policy.parameters())
    assert need["states"] == 4 * n + 4 * n + 7 * 4 * n         # weights, gradients, four sums + three gradients
    old = memory.estimate_gradient_variance(policy, rm, 16, 4, 128, 560, False, 40, keep_gradients_bytes=10**12)
    assert old["states"] == 8 * n + (3 * 40 + 4) * 4 * n and old["total"] > 4 * T4_BYTES
    # keeping the gradients is chosen only where they are small (the tiny policy's)
    assert memory.estimate_gradient_variance(policy, rm, 16, 4, 128, 560, True, 40)["states"] == need["states"]


def test_check_fits_refuses_only_a_clear_overflow():
    need = {"total": 10 * 10**9}
    memory.check_fits(need, "cuda", "the RL step", "batch_size=16", available=9 * 10**9)    # within the margin
    memory.check_fits(need, "cpu", "the RL step", "batch_size=16")                            # a CPU is not checked
    with pytest.raises(ConfigError, match=r"^the RL step: needs about 10.0 GB .* has 4.0 GB; try batch_size=16"):
        memory.check_fits(need, "cuda", "the RL step", "batch_size=16", available=4 * 10**9)
    assert memory.rl_hints(RLConfig(batch_size=32, k=4)) == "gradient_checkpointing=True or batch_size=16"
    assert memory.rl_hints(RLConfig(batch_size=4, k=4, gradient_checkpointing=True)) == "max_new_tokens=32"


def test_train_refuses_a_run_too_big_for_the_gpu_before_any_step(monkeypatch, tiny_dir, tokenizer, data_dir):
    import sys

    from b2b.models import load_policy, load_reward_model
    from b2b.reward import RewardConfig, train_reward_model

    train_mod = sys.modules["b2b.train"]  # the module (b2b.train is also the function it holds)
    monkeypatch.setattr(memory, "device_memory", lambda device: 1_000_000)  # a 1 MB "GPU"
    monkeypatch.setattr(train_mod, "rl_step", lambda *a, **k: pytest.fail("a step ran"))
    rm = load_reward_model(data_dir / "rm-level1")
    with pytest.raises(ConfigError, match=r"^the RL step \(8 rollouts of up to \d+ \+ 16 tokens\): .*"
                                          r"try gradient_checkpointing=True or batch_size=4"):
        train_mod.train(load_policy(tiny_dir, trainable=True), tokenizer, rm, PROMPTS,
                        RLConfig(steps=1, batch_size=8, max_new_tokens=16, eval_every=0), progress=False)
    from b2b.data import load_preferences

    fresh = load_reward_model(tiny_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    with pytest.raises(ConfigError, match=r"^reward model \(4 pairs of up to max_length 512 tokens per pass\): "
                                          r".*try gradient_checkpointing=True or micro_batch_size=2"):
        train_reward_model(fresh, tokenizer, load_preferences(str(data_dir), "train")[:8],
                           RewardConfig(batch_size=4), progress=False)


def test_colab_settings_keep_a_quarter_of_a_t4_free_by_the_measured_table():
    """docs/memory_colab.json holds `b2b memory --profile colab --json` (the real SmolLM2 weights, on
    this CPU): each stage measured at exactly today's colab recipe, each under 75% of 15 GB."""
    from b2b.config import get_profile
    from b2b.data import MAX_PROMPT_CHARS
    from b2b.recipes import reward_config, rl_config
    from b2b.tools.memory import HEADROOM, RL_ALGOS, T4_BYTES

    rows = json.loads(MEASURED.read_text())
    colab = get_profile("colab")
    policy, ref, rm = smollm2_shaped()
    assert {r["stage"] for r in rows} == {"reward level 1", "reward level 2"} | {f"rl {a}" for a in RL_ALGOS}
    for r in rows:
        assert r["profile"] == "colab" and r["peak_bytes"] <= (1 - HEADROOM) * T4_BYTES, r["stage"]
        st = r["settings"]
        if r["stage"].startswith("reward"):
            cfg = reward_config(colab, int(r["stage"][-1]))
            assert st == {"batch_size": cfg.batch_size, "micro_batch_size": cfg.micro_batch_size,
                          "max_length": cfg.max_length, "gradient_checkpointing": cfg.gradient_checkpointing}
            head = LlamaForSequenceClassification_like(rm, cfg.num_labels)
            want = memory.estimate_reward_training(head, cfg)["total"]
        else:
            cfg = rl_config(colab, r["stage"][3:])
            assert (st["batch_size"], st["k"], st["max_new_tokens"], st["gradient_checkpointing"]) == \
                (cfg.batch_size, cfg.k, cfg.max_new_tokens, cfg.gradient_checkpointing)
            assert st["prompt_chars"] == MAX_PROMPT_CHARS and r["mean_length"] == cfg.max_new_tokens
            want = memory.estimate_rl_step(policy, rm, ref, cfg, r["prompt_tokens"])["total"]
        assert r["estimate"]["total"] == pytest.approx(want, rel=1e-4), r["stage"]  # the table is today's estimate


def test_the_readme_and_docs_show_the_measured_table():
    """The memory table in the README and docs/performance.md is `b2b memory`'s own rendering of
    docs/memory_colab.json."""
    from b2b.tools.memory import memory_table

    table = memory_table(json.loads(MEASURED.read_text()))
    for doc in ("README.md", "docs/performance.md"):
        assert table in (ROOT / doc).read_text(), doc


def test_random_copy_keeps_the_shapes_and_tokenizer_and_draws_fresh_weights(tiny_dir, tmp_path):
    """`b2b memory --random-weights` measures a model of the policy's config with fresh weights (a
    GPU that cannot receive the real ones): same config and tokenizer, other weights, loadable."""
    import json as _json

    from b2b.models import load_policy, load_tokenizer
    from b2b.tools.memory import random_copy

    out = random_copy(str(tiny_dir), tmp_path / "random")
    a, b = load_policy(tiny_dir), load_policy(out)
    assert _json.loads((out / "config.json").read_text())["hidden_size"] == a.config.hidden_size
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert load_tokenizer(out)("Hello!")["input_ids"] == load_tokenizer(tiny_dir)("Hello!")["input_ids"]
