"""Mixed precision (`b2b.precision`): autocast's loss and gradient agree with fp32's to tolerance
(bf16 autocast on the CPU), fp16's gradient scaler skips an overflowing step instead of raising
or stepping on inf, and "auto" picks the dtype a GPU's compute capability has fast units for."""
import pytest
import torch

from b2b.errors import ConfigError
from b2b.precision import Precision, autocast_dtype

PROMPTS = ["List three fruits.", "What colour is a banana?", "Is a whale a fish?", "Hello!"]


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


@pytest.mark.parametrize("capability,want", [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_picks_fp16_on_a_t4_bf16_on_ampere_and_nothing_on_a_cpu(capability, want):
    assert autocast_dtype("cuda", "auto", capability) is want
    assert autocast_dtype("cpu", "auto") is None and autocast_dtype("cuda", "off", capability) is None
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16 and autocast_dtype("cpu", "fp16") is torch.float16
    for setting in ("fp16", "bf16", "off"):  # only fp16 needs a gradient scaler
        prec = Precision("cpu", setting)
        assert (prec.scaler is not None) == (setting == "fp16") and prec.name == setting.replace("off", "fp32")
    with pytest.raises(ConfigError, match="precision: expected one of auto, off, bf16, fp16, got 'half'"):
        Precision("cpu", "half")


def test_rl_loss_and_gradient_under_bf16_autocast_match_fp32(tiny_dir, tokenizer):
    """The learn phase's loss on one batch of several answers: bf16 autocast against fp32, the
    same weights (fp32 master weights: autocast casts only the matrix products' inputs)."""
    from b2b.advantages import reinforce_loss
    from b2b.models import load_policy
    from b2b.rollout import rollout_logprobs, sample_completions

    policy = load_policy(tiny_dir, trainable=True)
    gen = torch.Generator().manual_seed(0)
    ro = sample_completions(policy, tokenizer, PROMPTS * 2, 16, 1.0, gen)
    adv = torch.linspace(-1.0, 2.0, len(PROMPTS) * 2)
    out = {}
    for setting in ("off", "bf16"):
        prec = Precision("cpu", setting)
        policy.zero_grad(set_to_none=True)
        with prec.autocast():
            logp = rollout_logprobs(policy, ro)
            loss = reinforce_loss(adv, logp, ro.completion_mask)
        assert logp.dtype == torch.float32  # log-softmax and the loss in fp32 under autocast
        prec.backward(loss)
        assert all(p.grad.dtype == torch.float32 for p in policy.parameters() if p.grad is not None)
        out[setting] = (loss.item(), _flat_grad(policy).clone(), logp.detach())
    (l32, g32, lp32), (l16, g16, lp16) = out["off"], out["bf16"]
    assert l16 == pytest.approx(l32, rel=3e-2, abs=3e-2)
    assert (lp16 - lp32).abs().max().item() < 0.2  # per-token log-probs to bf16's ~3 significant digits
    assert _cos(g16, g32) > 0.99 and g16.norm().item() == pytest.approx(g32.norm().item(), rel=5e-2)
    assert not torch.equal(g16, g32)  # autocast did run the products in bf16


def test_reward_model_loss_and_gradient_under_bf16_autocast_match_fp32(tiny_dir, tokenizer, data_dir):
    from b2b.data import load_preferences
    from b2b.models import load_reward_model
    from b2b.reward import accumulated_pair_loss, encode_pairs

    pairs = load_preferences(str(data_dir), "train")[:8]
    chosen, rejected = encode_pairs(tokenizer, pairs, 128)
    rm = load_reward_model(tiny_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    rm.train()
    out = {}
    for setting in ("off", "bf16"):
        rm.zero_grad(set_to_none=True)
        loss, sc, sr = accumulated_pair_loss(rm, chosen, rejected, tokenizer.pad_token_id, "cpu", 4,
                                             Precision("cpu", setting))
        assert sc.dtype == torch.float32
        out[setting] = (loss.item(), _flat_grad(rm).clone())
    (l32, g32), (l16, g16) = out["off"], out["bf16"]
    assert l16 == pytest.approx(l32, rel=3e-2)
    assert _cos(g16, g32) > 0.99 and not torch.equal(g16, g32)


def test_fp16_scaler_scales_the_gradient_and_skips_an_overflowing_step(tiny_dir, tokenizer):
    """fp16 (a T4's precision) on the CPU: the backward pass runs on the scaled loss, clipping sees
    the true (unscaled) norm, and a step whose gradients overflow is skipped (weights unchanged,
    `optimizer_step` returns None, the scale halves) rather than raising or stepping on inf."""
    from b2b.advantages import reinforce_loss
    from b2b.models import load_policy
    from b2b.rollout import rollout_logprobs, sample_completions
    from b2b.step import optimizer_step

    policy = load_policy(tiny_dir, trainable=True)
    ro = sample_completions(policy, tokenizer, PROMPTS, 8, 1.0, torch.Generator().manual_seed(1))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    prec = Precision("cpu", "fp16", init_scale=64.0)  # 2**16 overflows this policy's fp16 gradients at once
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    scale = prec.scaler.get_scale()

    def loss_of(factor=1.0):
        with prec.autocast():
            return reinforce_loss(adv, rollout_logprobs(policy, ro), ro.completion_mask) * factor

    policy.zero_grad(set_to_none=True)
    loss_of().backward()
    plain = _flat_grad(policy).clone()
    policy.zero_grad(set_to_none=True)
    prec.backward(loss_of())
    scaled = _flat_grad(policy).clone()
    assert _cos(scaled, plain) > 0.999 and scaled.norm().item() == pytest.approx(scale * plain.norm().item(), rel=1e-3)
    norm = optimizer_step(policy, opt, loss_of(), 1.0, 1, "none", prec)      # a normal step: the true norm
    assert norm == pytest.approx(plain.norm().item(), rel=1e-2)
    before = [p.detach().clone() for p in policy.parameters()]
    assert optimizer_step(policy, opt, loss_of(1e30), 1.0, 2, "none", prec) is None  # scaled grads overflow
    assert all(torch.equal(a, p) for a, p in zip(before, policy.parameters()))       # nothing stepped
    assert prec.scaler.get_scale() == scale / 2


def test_train_records_its_precision_and_reward_training_runs_in_bf16(tiny_dir, tokenizer, data_dir, tmp_path):
    import json

    from b2b.data import load_preferences
    from b2b.models import load_policy, load_reward_model
    from b2b.reward import RewardConfig, train_reward_model
    from b2b.rl_config import RLConfig
    from b2b.train import train

    rm = load_reward_model(data_dir / "rm-level1")
    cfg = RLConfig(steps=2, batch_size=4, max_new_tokens=8, eval_every=0, checkpoint_every=0)
    h = train(load_policy(tiny_dir, trainable=True), tokenizer, rm, PROMPTS, cfg, world=True, progress=False,
              out=tmp_path / "run", precision="bf16")
    assert len(h.steps) == 2 and all(torch.isfinite(torch.tensor(s["grad_norm"])) for s in h.steps)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"
    fresh = load_reward_model(tiny_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    rows = train_reward_model(fresh, tokenizer, load_preferences(str(data_dir), "train")[:16],
                              RewardConfig(batch_size=8, warmup=1), progress=False, precision="bf16")
    assert len(rows) == 2 and all("skipped" not in r for r in rows)


def test_learn_counts_a_step_fp16_skipped_and_keeps_its_norm_out(tiny_dir, tokenizer):
    """`b2b.step.learn` passes its precision to the optimizer step: an fp16 step whose scaled gradients
    overflow is skipped and counted (`Update.skipped`, here two minibatches' updates), its loss logged,
    no gradient norm kept for it; the same batch in fp32 takes its steps."""
    from b2b.algorithms import get
    from b2b.models import load_policy
    from b2b.rl_config import RLConfig
    from b2b.rollout import sample_completions
    from b2b.step import learn

    cfg = RLConfig(algo="reinforce_pp", batch_size=4, max_new_tokens=8, kl_coef=0.0, ppo_epochs=1, minibatches=2)
    rewards = torch.tensor([1.0, -1.0, 0.5, -0.5])
    for prec, skipped in ((Precision("cpu", "fp16", init_scale=1e38), 2), (None, 0)):  # two updates, both overflow
        policy = load_policy(tiny_dir, trainable=True)
        ro = sample_completions(policy, tokenizer, PROMPTS, 8, 1.0, torch.Generator().manual_seed(1))
        opt = torch.optim.SGD(policy.parameters(), lr=0.1)
        before = [p.detach().clone() for p in policy.parameters()]
        upd = learn(policy, opt, ro, rewards, None, None, cfg, get("reinforce_pp"), 1, "none", prec)
        moved = not all(torch.equal(a, p) for a, p in zip(before, policy.parameters()))
        assert upd.skipped == skipped and len(upd.losses) == 2 and len(upd.grad_norms) == 2 - skipped
        assert moved == (skipped == 0)
