"""Will it fit? The memory a run needs, estimated before it starts, and a one-line refusal when the
GPU is clearly too small (rather than an out-of-memory error deep inside torch, minutes in).

    need = estimate_rl_step(policy, reward_model, ref, cfg, prompt_tokens=530)
    need["total"] / 1e9          # GB, the parts in need["states"], need["learn"], ...
    check_fits(need, "cuda", "the RL step", rl_hints(cfg))   # raises ConfigError when it clearly cannot fit

The estimate counts what a step holds at its peak (4 bytes per fp32 number):

    states    the trained weights, their gradients and AdamW's two moments: 16 bytes a parameter
    frozen    the reference policy and the reward model, at their own dtype
    learn     activations kept for the backward pass: per token and layer about 7h + 3h_kv + 4i numbers
              (hidden size h, key/value width h_kv, MLP width i; with gradient checkpointing only the
              h numbers of each layer's input, plus one layer's worth), and the (B, C, V) logits
              three times over (logits, their softmax, their gradient)
    sample    the KV cache (2 L h_kv numbers a token) and the sampling logits

and takes the largest of the phases on top of the states and frozen models. `b2b memory` measures the
same stages (`b2b.tools.memory`); the memory table in docs/performance.md sets the two side by side.
"""
from __future__ import annotations

import torch

from b2b.errors import ConfigError

MARGIN = 1.25
"""A run is refused when its estimate exceeds the device's memory by more than this factor: the
estimate is a model, so a run that it puts a little over is let through to try."""


def _dims(model) -> dict:
    c = getattr(model, "config", model)
    h = c.hidden_size
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    return {"L": c.num_hidden_layers, "h": h, "h_kv": h // heads * kv,
            "i": getattr(c, "intermediate_size", None) or 4 * h, "V": c.vocab_size}


def _bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) if model is not None else 0


def _layer_numbers(d: dict) -> int:
    """Activations a layer keeps for its backward pass, per token (numbers, not bytes)."""
    return 7 * d["h"] + 3 * d["h_kv"] + 4 * d["i"]


def activation_bytes(model, tokens: int, checkpointing: bool) -> int:
    """Bytes of activations a forward pass with gradients over `tokens` tokens keeps (fp32)."""
    d = _dims(model)
    per_layer = 4 * tokens * _layer_numbers(d)
    if checkpointing:  # each layer's input, plus one layer recomputed at a time in the backward pass
        return 4 * tokens * d["h"] * d["L"] + per_layer
    return per_layer * d["L"]


def estimate_rl_step(policy, reward_model, ref, cfg, prompt_tokens: int) -> dict:
    """Bytes one RL step of `cfg` (an RLConfig) needs at its peak, by part (see the module doc)."""
    d = _dims(policy)
    B, C, T = cfg.batch_size, cfg.max_new_tokens, prompt_tokens + cfg.max_new_tokens
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)  # LoRA: the adapters only
    states = _bytes(policy) + 12 * trainable
    frozen = _bytes(ref) + (_bytes(reward_model) if isinstance(reward_model, torch.nn.Module) else 0)
    rows = B // cfg.minibatches
    learn = activation_bytes(policy, rows * T, cfg.gradient_checkpointing) + 3 * 4 * rows * (C + 1) * d["V"]
    sample = 2 * d["L"] * B * d["h_kv"] * T * next(policy.parameters()).element_size() + 3 * 4 * B * d["V"]
    score = activation_bytes(policy, B * T, checkpointing=True) // max(1, d["L"])  # one layer at a time, no grad
    parts = {"states": states, "frozen": frozen, "learn": learn, "sample": sample, "score": score}
    parts["total"] = states + frozen + max(learn, sample, score)
    return parts


def estimate_reward_training(rm, cfg) -> dict:
    """Bytes reward-model training of `cfg` (a RewardConfig) needs at its peak, by part."""
    pairs = cfg.micro_batch_size or cfg.batch_size
    states = _bytes(rm) + 12 * sum(p.numel() for p in rm.parameters() if p.requires_grad)
    learn = activation_bytes(rm, 2 * pairs * cfg.max_length, cfg.gradient_checkpointing)
    return {"states": states, "learn": learn, "total": states + learn}


KEEP_GRADIENTS_BYTES = 2 * 10**9
"""`gradient_variance` keeps the per-batch gradients for its second pass while they take at most
this many bytes (the tiny policy's: 0.5 GB for 40 batches); above it (SmolLM2: 0.54 GB each, three
a batch) it recomputes them from the kept rollouts instead, so the device holds only four sums."""


def estimate_gradient_variance(policy, reward_model, prompts_per_batch: int, k: int, max_new_tokens: int,
                               prompt_tokens: int, gradient_checkpointing: bool, n_batches: int,
                               keep_gradients_bytes: int | None = None) -> dict:
    """Bytes `b2b.analysis.gradient_variance` needs at its peak, by part:

        states   the policy's weights and one set of gradients (no optimizer), the four running sums
                 and the three flattened gradients of the batch at hand (4 bytes a trainable
                 parameter each); all 3 x n_batches flattened gradients when it keeps them
                 (`keep_gradients_bytes`, default `KEEP_GRADIENTS_BYTES`)
        frozen   the reward model
        learn    the batch's log-prob forward, kept for three backward passes (its activations as an RL
                 step's, checkpointed or not, and the (B, C, V) logits three times)
        sample   the KV cache and sampling logits of the batch's B = prompts_per_batch x k rollouts
    """
    d = _dims(policy)
    B, C, T = prompts_per_batch * k, max_new_tokens, prompt_tokens + max_new_tokens
    n = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    limit = KEEP_GRADIENTS_BYTES if keep_gradients_bytes is None else keep_gradients_bytes
    kept = 3 * n_batches * n * 4
    flat = kept + 4 * n * 4 if kept <= limit else 7 * n * 4
    states = _bytes(policy) + 4 * n + flat
    frozen = _bytes(reward_model) if isinstance(reward_model, torch.nn.Module) else 0
    learn = activation_bytes(policy, B * T, gradient_checkpointing) + 3 * 4 * B * (C + 1) * d["V"]
    sample = 2 * d["L"] * B * d["h_kv"] * T * next(policy.parameters()).element_size() + 3 * 4 * B * d["V"]
    parts = {"states": states, "frozen": frozen, "learn": learn, "sample": sample}
    parts["total"] = states + frozen + max(learn, sample)
    return parts


def device_memory(device) -> int | None:
    """Bytes a CUDA device holds for torch (free now + allocated by this process); None elsewhere (a
    CPU run is not checked: the operating system has swap and its own out-of-memory report)."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return free + torch.cuda.memory_allocated(torch.device(device))


def rl_hints(cfg) -> str:
    """What to change in an RLConfig that does not fit, most effective first."""
    hints = [] if cfg.gradient_checkpointing else ["gradient_checkpointing=True"]
    hints.append(f"batch_size={cfg.batch_size // 2}" if cfg.batch_size >= 2 * cfg.k else
                 f"max_new_tokens={cfg.max_new_tokens // 2}")
    return " or ".join(hints)


def reward_hints(cfg) -> str:
    """What to change in a RewardConfig that does not fit, most effective first."""
    hints = [] if cfg.gradient_checkpointing else ["gradient_checkpointing=True"]
    pairs = cfg.micro_batch_size or cfg.batch_size
    hints.append(f"micro_batch_size={pairs // 2}" if pairs > 1 else f"max_length={cfg.max_length // 2}")
    return " or ".join(hints)


def check_fits(need: dict, device, what: str, hints: str, available: int | None = None) -> None:
    """A one-line `ConfigError` when `need['total']` exceeds the device's memory (`available`, default
    `device_memory(device)`) by more than `MARGIN`; nothing when it fits or the device is not a GPU."""
    available = device_memory(device) if available is None else available
    if available is None or need["total"] <= MARGIN * available:
        return
    raise ConfigError(f"{what}: needs about {size_text(need['total'])} of GPU memory by b2b's estimate, the GPU has "
                      f"{size_text(available)}; try {hints} (docs/performance.md#memory)")


def size_text(n_bytes: float) -> str:
    """'12.3 GB', or '45 MB' under a gigabyte."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"
