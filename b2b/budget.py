"""How long will it take? The step-time model: each phase's FLOPs and bytes on a machine's rates,
its assumptions stated, checked against this CPU's measured phases (tests/test_budget.py).

    t = rl_step_seconds(T4, SMOLLM2, TINY_RM, batch=16, prompt=37, mean_new=24, max_new=48)
    t["generate"], t["score"], t["learn"], t["total"]        # seconds of one RL step on a Colab T4
    print(budget_line(stages))                               # what a notebook prints before a long bar

The FLOPs are `step_flops`' (2 x block parameters a token forward, the LM head on completion
positions only, a backward pass twice its forward, three times with gradient checkpointing), the
same count `b2b bench`'s phase account uses. Each phase runs at a share of the machine's rate (`Hardware`'s efficiencies):

    generate  max(FLOPs at the decode rate, the weights read once per sampled position at the
              memory bandwidth) + a fixed cost per sampled position (a GPU's kernel launches and
              Python: on a small model the decode loop is launch-bound, not FLOP-bound)
    score     the reward model's forward and the reference policy's log-probs, frozen models (half
              precision on a GPU, `b2b.models.pick_dtype`)
    learn     forward + backward of the trained model (under autocast on a GPU, `b2b.precision`),
              and AdamW reading and writing its 28 bytes a parameter

A budget is a list of `Stage`s (a reward model, an RL run with its evaluations, a measurement);
`plan_seconds` adds them up. The T4's rates are the assumptions in `T4`'s fields (the figures the
issue that asked for this model used: fp32 training at 30-40% of 8.1 TFLOP/s, fp16 frozen models at
30-40% of 65 TFLOP/s, decoding bound by 320 GB/s); the CPU's are measured on this 2-core machine
(`b2b bench`'s ceilings and its SmolLM2 phase account, docs/measured/).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

MEASURED = Path(__file__).resolve().parent.parent / "docs" / "measured"


@dataclass(frozen=True)
class Shape:
    """What the model needs of a Llama-style network: the parameters a token passes through in the
    blocks, the LM head's (hidden x vocabulary; 0 for a reward model's score head), all parameters
    (weights read per decoded position; optimizer state), and its name."""

    name: str
    block_params: int
    head_params: int
    params: int


def model_shape(config) -> dict:
    """What the FLOP account needs of a Llama-style config: the parameters of the transformer blocks
    (every matrix a token passes through, embeddings and LM head excluded), the LM head's size, the
    number of layers and the hidden and MLP widths."""
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = h * config.num_attention_heads * head_dim * 2 + 2 * h * kv + 3 * h * i  # q, o; k, v; gate, up, down
    return {"block_params": n * per_layer, "head_params": h * config.vocab_size, "layers": n, "hidden": h,
            "intermediate": i}


def shape_of(config, name: str = "") -> Shape:
    """A `Shape` from a transformers Llama config (no weights needed)."""
    s = model_shape(config)
    emb = config.vocab_size * config.hidden_size
    tied = getattr(config, "tie_word_embeddings", True)
    params = s["block_params"] + emb * (1 if tied else 2) + (2 * s["layers"] + 1) * config.hidden_size
    is_rm = "SequenceClassification" in str((getattr(config, "architectures", None) or [""])[0])
    return Shape(name or getattr(config, "_name_or_path", "") or "model", s["block_params"],
                 0 if is_rm else s["head_params"], params)


def _llama(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int, name: str) -> Shape:
    from transformers import LlamaConfig

    return shape_of(LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                                tie_word_embeddings=True), name)


SMOLLM2 = _llama(576, 1536, 30, 9, 3, 49152, "SmolLM2-135M")
"""SmolLM2-135M-Instruct's shape (its config.json): 30 layers of width 576, 134.5M parameters."""
SMOLLM2_RM = dataclasses.replace(SMOLLM2, name="SmolLM2-135M reward model", head_params=0)
TINY = _llama(128, 384, 4, 4, 4, 2048, "tiny policy")
"""The tiny world's policy and reward models (data/tiny-sft, data/rm-level1)."""
TINY_RM = dataclasses.replace(TINY, name="tiny reward model", head_params=0)


@dataclass(frozen=True)
class Hardware:
    """A machine's rates and the share of them each phase reaches (the model's assumptions)."""

    name: str
    fp32_flops: float
    """Matrix-product rate in fp32 (a GPU's data-sheet peak; a CPU's measured rate)."""
    half_flops: float
    """Matrix-product rate in fp16 / bf16 (a GPU's tensor cores); a CPU: its fp32 rate."""
    bandwidth: float
    """Memory bandwidth in bytes/s."""
    train_eff: float
    """Share of `fp32_flops` a trained model's forward + backward passes reach in fp32."""
    autocast_eff: float
    """Share of `half_flops` they reach under autocast (0: the machine trains in fp32)."""
    frozen_eff: float
    """Share of the frozen models' rate (half precision on a GPU) their forward passes reach."""
    decode_eff: float
    """Share of `fp32_flops` the decode loop's small products reach."""
    decode_overhead_s: float
    """Fixed seconds per sampled position (kernel launches and Python around the decode step)."""
    half_frozen: bool
    """Frozen models (reference policy, reward model) in half precision (`b2b.models.pick_dtype`)."""
    memory_bytes: int
    disk_bytes: int
    source: str

    @property
    def train_rate(self) -> float:
        return self.autocast_eff * self.half_flops if self.autocast_eff else self.train_eff * self.fp32_flops

    @property
    def frozen_rate(self) -> float:
        return self.frozen_eff * (self.half_flops if self.half_frozen else self.fp32_flops)


T4 = Hardware(
    name="Colab T4", fp32_flops=8.1e12, half_flops=65e12, bandwidth=320e9, train_eff=0.35, autocast_eff=0.12,
    frozen_eff=0.2, decode_eff=0.35, decode_overhead_s=6e-3, half_frozen=True, memory_bytes=15 * 10**9,
    disk_bytes=5 * 10**9,
    source="assumed, not measured: data-sheet rates (8.1 TFLOP/s fp32, 65 TFLOP/s fp16 tensor cores, 320 GB/s); "
           "fp32 training at 35% of 8.1; training under fp16 autocast at 12% of 65 (7.8 TFLOP/s: casts, fp32 "
           "reductions and small products keep it far below the tensor cores' peak); frozen fp16 forward passes "
           "at 20% of 65; 6 ms a sampled position for the decode loop's ~400 kernel launches and Python; "
           "a notebook's runs on at most 5 GB of disk")


def cpu_here() -> Hardware:
    """This 2-core machine, from its measured ceilings and the SmolLM2 RLOO phase account
    (docs/measured/bench_smollm2_rloo_account.json: `b2b bench --policy <SmolLM2> --vs-trl`):
    each phase's efficiency is its measured share of the matrix-product ceiling."""
    acc = json.loads((MEASURED / "bench_smollm2_rloo_account.json").read_text())
    lim, phases = acc["limits"], acc["algos"]["rloo"]["account"]
    rate = lim["matmul_gflops"] * 1e9
    adamw_s = ADAMW_BYTES * SMOLLM2.params / (lim["bandwidth_gbs"] * 1e9)
    learn_rate = phases["learn"]["gflop"] * 1e9 / (phases["learn"]["measured_s"] - adamw_s)
    return Hardware(
        name=f"this machine's CPU ({acc['threads']} threads)", fp32_flops=rate, half_flops=rate,
        bandwidth=lim["bandwidth_gbs"] * 1e9, train_eff=learn_rate / rate, autocast_eff=0.0,
        frozen_eff=phases["score"]["gflops"] * 1e9 / rate, decode_eff=phases["generate"]["gflops"] * 1e9 / rate,
        decode_overhead_s=0.0, half_frozen=False, memory_bytes=24 * 2**30, disk_bytes=50 * 10**9,
        source="measured: b2b bench's ceilings and its SmolLM2 RLOO phase account on this machine")


def measured_hardware(rows: list[dict], base: Hardware = T4, policy: Shape = SMOLLM2, reward: Shape = SMOLLM2_RM,
                      name: str | None = None) -> Hardware:
    """`base` with the efficiencies a measurement gives: `b2b memory --profile colab --json` run on
    that machine (each RL stage records its second step's phases, `phases`, at known sizes). From the
    first RL row: the frozen models' share (`score`), the trained model's (`learn`, less AdamW's
    bytes; under autocast when the row's `precision` is half, else fp32), and the decode loop's cost
    per position beyond its FLOP or bandwidth floor (`generate`). The rates themselves stay `base`'s."""
    rl = next(r for r in rows if r["stage"].startswith("rl ") and "phases" in r)
    st, ph = rl["settings"], rl["phases"]
    B, P, C, max_new = st["batch_size"], rl["prompt_tokens"], rl["mean_length"], st["max_new_tokens"]
    updates, ckpt = st.get("updates", 1), st["gradient_checkpointing"]
    f = step_flops(policy, reward, B, P, C, reference=rl.get("reference", True), checkpointing=ckpt,
                   rollout_pass=updates > 1)
    learn_rate = f["learn"] / max(1e-9, ph["learn"] - updates * ADAMW_BYTES * policy.params / base.bandwidth)
    half = rl.get("precision", "fp32") != "fp32"
    floor = _gen_seconds(dataclasses.replace(base, decode_overhead_s=0.0), policy, B, P, C, max_new)
    return dataclasses.replace(
        base, name=name or base.name,
        frozen_eff=f["score"] / ph["score"] / (base.half_flops if base.half_frozen else base.fp32_flops),
        autocast_eff=learn_rate / base.half_flops if half else 0.0,
        train_eff=base.train_eff if half else learn_rate / base.fp32_flops,
        decode_overhead_s=max(0.0, (ph["generate"] - floor) / max_new),
        source=f"measured: b2b memory's {rl['stage']} ({rl.get('device', '?')}, {rl.get('precision', 'fp32')}); "
               f"rates from {base.name}")


GPU_RECORD = MEASURED / "gpu_colab.json"
"""`b2b memory --profile colab --random-weights --record docs/measured/gpu_colab.json`, run on a Colab T4:
the record whose efficiencies the colab plans use in place of `T4`'s assumed ones (`plan_hardware`)."""


def plan_hardware(record: Path | None = None) -> Hardware:
    """The machine the colab plans are estimated on: `T4` with the efficiencies measured on a T4
    (`measured_hardware` of `GPU_RECORD`'s rows) when such a record exists, else `T4`'s assumptions.
    A record from another GPU does not stand for a T4 and is not used."""
    path = Path(record) if record is not None else GPU_RECORD
    if not path.exists():
        return T4
    rec = json.loads(path.read_text())
    if "T4" not in rec.get("device", ""):
        return T4
    return measured_hardware(rec["rows"], name=f"Colab T4 (measured {rec.get('date', '')})".replace(" )", ")"))


ADAMW_BYTES = 28
"""Bytes AdamW moves per trained parameter and step: reads weight, gradient and two moments, writes
weight and two moments (fp32)."""


def _forward_flops(shape: Shape, rows: int, tokens: float, head_tokens: float) -> float:
    return 2 * shape.block_params * rows * tokens + 2 * shape.head_params * rows * head_tokens


def step_flops(policy: Shape, reward: Shape, batch: int, prompt: float, new: float, *, reference: bool = True,
               epochs: int = 1, checkpointing: bool = False, rollout_pass: bool = False) -> dict:
    """Dense matrix-product FLOPs of one RL step, per phase, over real (unpadded) tokens: a token
    through a model's blocks costs 2 x its block parameters forward (attention scores, norms and
    other element-wise work left out: a few percent at these lengths), the LM head 2 x hidden x
    vocabulary per completion position only (as b2b computes it), and a backward pass twice its
    forward (three times with gradient checkpointing, which repeats the forward).

        generate  prompts once (prefill) + every sampled token through the blocks and the head
        score     reward model over prompt + completion; the reference policy's log-probs (when
                  the run keeps a reference, `reference`)
        learn     forward + backward over the batch, once per epoch (`epochs`); with several updates
                  per batch, the rollout policy's own log-prob pass before the first (`rollout_pass`)

    `b2b bench`'s phase account (`b2b.tools.bench.phase_flops`) and the step-time model both count
    with it.
    """
    fwd = _forward_flops(policy, batch, prompt + new, new)
    return {"generate": _forward_flops(policy, batch, prompt + new, new + 1),
            "score": _forward_flops(reward, batch, prompt + new, 0) + (fwd if reference else 0),
            "learn": epochs * fwd * (4 if checkpointing else 3) + (fwd if rollout_pass else 0)}


def _gen_seconds(hw: Hardware, policy: Shape, rows: int, prompt: float, mean_new: float, max_new: int) -> float:
    flops = _forward_flops(policy, rows, prompt + mean_new, mean_new + 1)
    weights = 4 * policy.params  # the trained policy samples in fp32; every position reads all of it
    return max(flops / (hw.decode_eff * hw.fp32_flops), max_new * weights / hw.bandwidth) + max_new * hw.decode_overhead_s


def rl_step_seconds(hw: Hardware, policy: Shape, reward: Shape, batch: int, prompt: float, mean_new: float,
                    max_new: int, updates: int = 1, reference: bool = True, checkpointing: bool = False,
                    epochs: int = 1) -> dict:
    """Seconds of one RL step of `batch` rollouts (`prompt` tokens, completions of `mean_new` on
    average and at most `max_new`), by phase (`step_flops` on the machine's rates). `updates`:
    optimizer steps per batch (PPO's epochs x minibatches; more than one adds the rollout policy's own
    log-prob pass), `epochs` the passes over the batch; `reference`: the reference policy's log-probs
    are taken (a KL penalty, or the tracked KL)."""
    f = step_flops(policy, reward, batch, prompt, mean_new, reference=reference, epochs=epochs,
                   checkpointing=checkpointing, rollout_pass=updates > 1)
    out = {"generate": _gen_seconds(hw, policy, batch, prompt, mean_new, max_new),
           "score": f["score"] / hw.frozen_rate,
           "learn": f["learn"] / hw.train_rate + updates * ADAMW_BYTES * policy.params / hw.bandwidth}
    out["total"] = sum(out.values())
    return out


def eval_seconds(hw: Hardware, policy: Shape, reward: Shape, prompts: int, prompt: float, mean_new: float,
                 max_new: int, sample_batch: int) -> float:
    """One held-out evaluation: `prompts` answers sampled `sample_batch` at a time, scored by the
    reward model, their KL to the reference policy taken."""
    batches = -(-prompts // sample_batch)
    rows = min(prompts, sample_batch)
    gen = batches * _gen_seconds(hw, policy, rows, prompt, mean_new, max_new)
    tokens = prompt + mean_new
    frozen = _forward_flops(reward, prompts, tokens, 0) + 2 * _forward_flops(policy, prompts, tokens, mean_new)
    return gen + frozen / hw.frozen_rate


def reward_training_seconds(hw: Hardware, reward: Shape, pairs: int, epochs: float, mean_tokens: float,
                            batch_size: int, checkpointing: bool, fp32: bool = False) -> float:
    """Training a reward model: forward + backward of both texts of every pair (`mean_tokens`
    each, after truncation and padding), AdamW once per step. `fp32`: no autocast (TRL's trainer as
    the course sets it)."""
    flops = pairs * epochs * _forward_flops(reward, 2, mean_tokens, 0) * (4 if checkpointing else 3)
    rate = hw.train_eff * hw.fp32_flops if fp32 else hw.train_rate
    steps = max(1, int(pairs * epochs / batch_size))
    return flops / rate + steps * ADAMW_BYTES * reward.params / hw.bandwidth


def sft_seconds(hw: Hardware, policy: Shape, steps: int, batch_size: int, tokens: float) -> float:
    """Fine-tuning a policy (`b2b.sft`, fp32): forward + backward over `tokens` per example (prompt and
    demonstration), AdamW once per step."""
    flops = steps * _forward_flops(policy, batch_size, tokens, tokens) * 3
    return flops / (hw.train_eff * hw.fp32_flops) + steps * ADAMW_BYTES * policy.params / hw.bandwidth


def scoring_seconds(hw: Hardware, reward: Shape, texts: int, mean_tokens: float) -> float:
    """Scoring `texts` texts with a reward model (held-out accuracy, probes)."""
    return _forward_flops(reward, texts, mean_tokens, 0) / hw.frozen_rate


@dataclass
class Stage:
    """One thing a notebook trains or measures: a label, its estimated seconds, the disk it
    writes (bytes) and the memory it needs at its peak (bytes; `b2b.memory`), and whether a
    learner's saved copy (Drive) can stand in for it."""

    label: str
    seconds: float
    disk: int = 0
    memory: int = 0
    saved: bool = False
    detail: dict = field(default_factory=dict)


def plan_seconds(stages: list[Stage], have_saved: bool = False) -> float:
    """Seconds of a notebook's stages; `have_saved`: the stages a saved copy stands in for cost nothing."""
    return sum(0.0 if (have_saved and s.saved) else s.seconds for s in stages)


def minutes(seconds: float) -> str:
    """'about 7 minutes', 'under a minute'."""
    if seconds < 60:
        return "under a minute"
    return f"about {round(seconds / 60)} minute{'s' if round(seconds / 60) != 1 else ''}"


def budget_line(stages: list[Stage], hw: Hardware = T4) -> str:
    """One line a notebook prints before its long bars start: the estimate in total and by stage."""
    total = plan_seconds(stages)
    parts = "; ".join(f"{s.label} {minutes(s.seconds).removeprefix('about ')}" for s in stages)
    return f"estimated on a {hw.name}: {minutes(total)} ({parts})"


# ----------------------------------------------------------------------------- stages of the colab profile

NOTEBOOK_BUDGET_S = 15 * 60
"""Each notebook's colab default finishes within this on a T4 (install excluded)."""

TINY_WORLD_PROMPT_TOKENS = 36.9
"""Mean chat-formatted tiny-world prompt in SmolLM2's tokens (measured: `b2b bench --policy <SmolLM2>`'s
`prompt_tokens`, docs/measured/bench_smollm2_rloo_account.json)."""

HS2_PROMPT_TOKENS = 250
HS2_NEW_SHARE = 0.85
HS2_TEXT_TOKENS = {1024: 700, 512: 460}
"""HelpSteer2's sizes as the plans assume them (not measured here: the hub is out of reach): a
sampled prompt of at most 2,000 characters averages 250 SmolLM2 tokens chat-formatted; answers run to
85% of `max_new_tokens` on average; a chat-formatted pair text (prompt + response) averages 700 tokens
cut at 1,024, 460 cut at 512 (padding to the longest of a length-sorted batch included)."""


TINY_WORLD_SFT_TOKENS = 57
"""Mean tokens of one tiny-world demonstration, chat-formatted, in SmolLM2's tokens (measured: about
910 a batch of 16 in `b2b sft`'s fine-tune, docs/real-model.md)."""
LOAD_S = 20.0
"""Seconds to load SmolLM2 and read the tiny world's 20,000 demonstrations before a fine-tune (assumed)."""


def sft_stage(hw: Hardware = T4) -> Stage:
    """The `tiny-smollm2` profile's fine-tune of SmolLM2 on the tiny world (`b2b.config.TINY_SMOLLM2_SFT`),
    once per runtime, or read back from Drive (`saved`); written in fp32 (0.54 GB)."""
    from b2b.config import TINY_SMOLLM2_SFT

    c = TINY_SMOLLM2_SFT
    return Stage("SmolLM2's tiny-world fine-tune", LOAD_S + sft_seconds(hw, SMOLLM2, c["steps"], c["batch_size"],
                                                                        TINY_WORLD_SFT_TOKENS),
                 disk=4 * SMOLLM2.params, saved=True, detail=dict(c))


@functools.lru_cache(maxsize=1)
def _meta_models():
    """SmolLM2-135M's policy, its frozen fp16 reference, a reward model in training and a frozen fp16
    one, on the meta device (shapes, no weights; on a T4 the frozen models load in fp16)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    kw = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
              num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192)
    with torch.device("meta"):
        policy, ref = LlamaForCausalLM(LlamaConfig(**kw)), LlamaForCausalLM(LlamaConfig(**kw)).half()
        rm = LlamaForSequenceClassification(LlamaConfig(**kw, num_labels=1))
        frozen_rm = LlamaForSequenceClassification(LlamaConfig(**kw, num_labels=1)).half()
    return policy, ref.requires_grad_(False), rm, frozen_rm.requires_grad_(False)


def reward_stage(cfg, hw: Hardware = T4, fp32: bool = False) -> Stage:
    """Training a SmolLM2 reward model of `cfg` (a RewardConfig) on HelpSteer2, with its held-out
    accuracy checks (500 pairs every `eval_every` steps), saved in fp32 (0.54 GB)."""
    from b2b.memory import estimate_reward_training

    level = cfg.level
    pairs = cfg.limit or 8_207
    tokens = HS2_TEXT_TOKENS.get(cfg.max_length, min(cfg.max_length, 700))
    train = reward_training_seconds(hw, SMOLLM2_RM, pairs, cfg.epochs, tokens, cfg.batch_size,
                                    cfg.gradient_checkpointing, fp32=fp32)
    steps = max(1, int(pairs * cfg.epochs / cfg.batch_size))
    checks = steps // cfg.eval_every + 1 if cfg.eval_every else 1
    seconds = train + checks * scoring_seconds(hw, SMOLLM2_RM, 2 * 500, tokens)
    rm = _meta_models()[2]
    return Stage(f"reward model (level {level})", seconds, disk=4 * SMOLLM2.params,
                 memory=estimate_reward_training(rm, cfg)["total"], saved=True,
                 detail={"pairs": pairs, "max_length": cfg.max_length, "epochs": cfg.epochs})


def rl_timing(cfg, hw: Hardware = T4, prompt: float = HS2_PROMPT_TOKENS, reward: Shape = SMOLLM2_RM,
              sample_batch: int = 32) -> tuple[dict, float]:
    """(one step's seconds by phase, one held-out evaluation's seconds) of SmolLM2 at `cfg` (an RLConfig)."""
    from b2b.algorithms import get

    algo, mean_new = get(cfg.algo), HS2_NEW_SHARE * cfg.max_new_tokens
    step = rl_step_seconds(hw, SMOLLM2, reward, cfg.batch_size, prompt, mean_new, cfg.max_new_tokens,
                           updates=algo.updates(cfg), reference=cfg.kl_coef > 0 or cfg.track_kl,
                           checkpointing=cfg.gradient_checkpointing, epochs=cfg.ppo_epochs if algo.clipped else 1)
    ev = eval_seconds(hw, SMOLLM2, reward, cfg.eval_prompts or 128, prompt, mean_new, cfg.max_new_tokens, sample_batch)
    return step, ev


def rl_stage(label: str, cfg, hw: Hardware = T4, prompt: float = HS2_PROMPT_TOKENS, reward: Shape = SMOLLM2_RM,
             sample_batch: int = 32) -> Stage:
    """One RL run of `cfg` (an RLConfig) with its held-out evaluations and checkpoints."""
    from b2b.memory import estimate_rl_step

    step, ev = rl_timing(cfg, hw, prompt, reward, sample_batch)
    evals = (cfg.steps // cfg.eval_every if cfg.eval_every else 0) + 2
    ckpt = 4 * SMOLLM2.params * (3 if cfg.checkpoint_optimizer else 1)
    n_ckpt = min(cfg.keep_checkpoints, max(1, cfg.steps // max(1, cfg.checkpoint_every))) if cfg.checkpoint_every else 0
    policy, ref, _, frozen_rm = _meta_models()
    memory = estimate_rl_step(policy, frozen_rm, ref if (cfg.kl_coef > 0 or cfg.track_kl) else None,
                              cfg, int(prompt * 2.4))["total"]  # the longest prompts, as the memory table measures
    return Stage(label, cfg.steps * step["total"] + evals * ev, disk=n_ckpt * ckpt, memory=memory,
                 detail={"steps": cfg.steps, "step_s": step, "evals": evals, "eval_s": ev})
