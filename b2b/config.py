"""Profiles: one code path, three sizes of world.

- `ci`:    the tiny world, a few steps; what CI runs through every notebook (minutes on 2 cores).
- `tiny`:  the tiny world at full length on a CPU; the committed notebook outputs and README figures.
- `colab`: SmolLM2-135M-Instruct + HelpSteer2 (binarized) on a GPU; needs the Hugging Face hub.

Resolution order: explicit argument, then `$B2B_PROFILE`, then `$CI` set -> `ci`,
then a CUDA GPU -> `colab`, else `tiny`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from b2b.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The shipped tiny-world data: `$B2B_DATA`, else the repository's `data/` next to the
    package (editable install or a clone), else `./data` or `../data` (a notebook in notebooks/)."""
    if os.environ.get("B2B_DATA"):
        return Path(os.environ["B2B_DATA"]).expanduser().resolve()
    for cand in (PACKAGE_DIR.parent / "data", Path.cwd() / "data", Path.cwd().parent / "data"):
        if (cand / "prompts_test.jsonl").exists():
            return cand.resolve()
    return (PACKAGE_DIR.parent / "data").resolve()


@dataclass(frozen=True)
class Profile:
    """Where models and data come from, and how big a run is."""

    name: str
    policy: str
    """SFT policy (also the reference policy): a local directory or a hub model id."""
    reward_backbone: str
    """Backbone a reward model is initialised from (the policy's, as the seed did)."""
    preferences: str
    """Preference data: a local directory holding prefs_{split}.jsonl, a JSONL file or a hub dataset id."""
    preferences_split: str | None
    """Hub split name (HelpSteer2-binarized: `average_rating`); None for local data."""
    world: bool
    """True when the tiny world's gold judge can rate the responses."""
    eval_prompts: int
    """Held-out prompts that `evaluate` samples on."""
    max_new_tokens: int
    """Longest completion sampled."""
    sample_batch: int
    """Prompts sampled together in one batch when evaluating (memory bound on a GPU)."""
    scale: float
    """Multiplier on steps and sample counts of the notebooks' runs (ci < tiny)."""


def _tiny(name: str, eval_prompts: int, scale: float) -> Profile:
    d = data_dir()
    return Profile(name=name, policy=str(d / "tiny-sft"), reward_backbone=str(d / "tiny-sft"),
                   preferences=str(d), preferences_split=None, world=True,
                   eval_prompts=eval_prompts, max_new_tokens=64, sample_batch=128, scale=scale)


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, or the one resolved from the environment (see module doc)."""
    name = resolve_profile_name(name)
    if name == "ci":
        return _tiny("ci", eval_prompts=64, scale=0.1)
    if name == "tiny":
        return _tiny("tiny", eval_prompts=512, scale=1.0)
    smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
    return Profile(name="colab", policy=smol, reward_backbone=smol,
                   preferences="esfrankel17/original_HelpSteer2_binarized",
                   preferences_split="average_rating", world=False, eval_prompts=128,
                   max_new_tokens=128, sample_batch=32, scale=1.0)


PROFILES = ("ci", "tiny", "colab")


def resolve_profile_name(name: str | None = None) -> str:
    """explicit -> $B2B_PROFILE -> $CI -> 'ci' -> CUDA -> 'colab' -> 'tiny'."""
    name = name or os.environ.get("B2B_PROFILE") or None
    if name is None and os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        name = "ci"
    if name is None:
        import torch
        name = "colab" if torch.cuda.is_available() else "tiny"
    if name not in PROFILES:
        raise ConfigError(f"profile: expected one of {', '.join(PROFILES)}, got {name!r}")
    return name


def pick_dtype(device: str, capability: tuple[int, int] | None = None):
    """Weights dtype for inference models: bf16 on Ampere+ GPUs (compute capability >= 8),
    fp16 on older GPUs such as Colab's T4 (7.5), fp32 on the CPU."""
    import torch
    if not str(device).startswith("cuda"):
        return torch.float32
    if capability is None:
        capability = torch.cuda.get_device_capability(torch.device(device))
    return torch.bfloat16 if capability[0] >= 8 else torch.float16


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def setup(profile: str | None = None, seed: int = 0) -> Profile:
    """The one setup line of every notebook: resolve the profile, seed everything, say where we run."""
    import random

    import torch

    p = get_profile(profile)
    try:  # weight-loading progress bars add nothing to a notebook
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    random.seed(seed)
    torch.manual_seed(seed)
    policy = p.policy
    if Path(policy).is_absolute():  # show data/tiny-sft, not this machine's path
        policy = os.path.relpath(policy, data_dir().parent)
    print(f"b2b profile: {p.name} | policy: {policy} | device: {default_device()} | seed: {seed}")
    return p
