"""The course's reward models: which one a notebook or `b2b run` trains against, and where it lives.

    rm = course_reward_model(get_profile("tiny"), level=1)    # the one shipped in data/rm-level1
    rm, tok, metrics, history, probe = reward_stage(profile, level=2, out="runs/rm")  # train one now

A tiny-world profile with its own policy ships both levels in `data/` (with `TRAINING_RECORD`: the
recipe and curve they were trained with); any other profile trains one by its recipe
(`b2b.recipes.reward_config`) once, into `runs/rm-<profile>-level<L>`, where later notebooks find it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from b2b.config import Profile
from b2b.guards import out_of_memory
from b2b.data import heldout_prompts, in_world, pairs_text, preference_splits
from b2b.recipes import reward_config
from b2b.reward import RewardConfig

SHIPPED_REWARD_MODELS = {1: "rm-level1", 2: "rm-level2"}


TRAINING_RECORD = "b2b_training.json"
"""Beside a shipped reward model: the recipe it was trained by and its training curve,
`{"config": RewardConfig as a dict, "backbone": its directory or hub name, "train_pairs": n,
"history": [...]}`."""


def training_record(cfg: RewardConfig, backbone, train_pairs: int, history: list[dict]) -> dict:
    """What `b2b build-reward-models` writes to TRAINING_RECORD beside a shipped model."""
    return {"config": dataclasses.asdict(cfg), "backbone": Path(str(backbone)).name, "train_pairs": train_pairs,
            "history": history}


def reward_model_for(profile: Profile, cfg: RewardConfig, tokenizer, train_pairs: list[dict],
                     eval_pairs: list[dict] | None = None, retrain: bool = False, progress: bool = True):
    """(reward model, training history, where it came from) for notebooks 01-02.

    When the profile ships a reward model trained by exactly this recipe (its TRAINING_RECORD
    has the same config, backbone and number of training pairs), that model and its recorded
    curve are loaded in seconds instead of training for most of an hour on a CPU; `retrain=True`
    (or any other setting) trains one here, from the backbone, with `cfg.seed`, as
    `b2b build-reward-models` did. A profile that ships none (colab, another policy) keeps the
    model it trains in `course_reward_dir` with its record, where the later notebooks (and a
    rerun of this one) find it. The source is the model's path (relative to the working
    directory) or "trained".
    """
    import json

    from b2b.models import load_reward_model
    from b2b.reward import save_reward_model

    cfg = cfg.validate()
    want = training_record(cfg, profile.reward_backbone, len(train_pairs[: cfg.limit or None]), history=[])
    shipped = shipped_reward_model(profile, cfg.level)
    home = shipped if shipped is not None else course_reward_dir(profile, cfg.level)
    record = home / TRAINING_RECORD
    if not retrain and record.exists() and (home / "config.json").exists():
        saved = json.loads(record.read_text())
        if isinstance(saved.get("config"), dict):  # a setting the record predates counts as its default
            saved["config"] = {**dataclasses.asdict(RewardConfig()), **saved["config"]}
        if {**saved, "history": []} == want:
            return load_reward_model(home), saved["history"], os.path.relpath(home)
    rm, history = train_from_backbone(profile, cfg, tokenizer, train_pairs, eval_pairs, progress)
    if shipped is None:  # kept for the later notebooks; a shipped model is never overwritten
        save_reward_model(rm, tokenizer, home)
        record.write_text(json.dumps({**want, "history": history}) + "\n")
    return rm, history, "trained"


def course_reward_dir(profile: Profile, level: int) -> Path:
    """Where a profile's level-`level` reward model lives: shipped in data/ (the tiny world, its
    own policy), else `runs/rm-<profile>-level<level>` under the working directory, written by
    notebook 01 (02) or by the first notebook that needs it (`course_reward_model`)."""
    shipped = shipped_reward_model(profile, level)
    return shipped if shipped is not None else Path("runs") / f"rm-{profile.name}-level{level}"


def course_reward_model(profile: Profile, level: int = 1, say=print, progress: bool = True):
    """The reward model notebooks 03-08 train against: the shipped one (tiny world); else the one
    notebook 01 (level 2: 02) trained in `course_reward_dir`; else, said in one line, one trained
    here by the same recipe (`reward_config`) and kept there for the next notebook."""
    from b2b.models import load_reward_model, load_tokenizer

    shipped = shipped_reward_model(profile, level)
    if shipped is not None:
        return for_policy(profile, load_reward_model(shipped), load_tokenizer(shipped))
    tok = load_tokenizer(profile.reward_backbone)
    train, test = preference_splits(profile, say=lambda _: None)
    cfg = reward_config(profile, level)
    rm, _, source = reward_model_for(profile, cfg, tok, train, test, progress=progress)
    if source == "trained":
        say(f"reward model: none yet for profile {profile.name} (notebook 0{level} trains it); trained one here by "
            f"its recipe on {pairs_text(len(train[: cfg.limit or None]))} -> {course_reward_dir(profile, level)}")
    else:
        say(f"reward model: {source} (notebook 0{level}'s)")
    return for_policy(profile, rm, tok)


def for_policy(profile: Profile, rm, rm_tokenizer):
    """`rm` as the profile's policy reads it: itself when the policy is its backbone (one
    tokenizer), else wrapped to re-encode the policy's answers with `rm_tokenizer`
    (`b2b.reward.retokenized`; the `tiny-smollm2` profile: SmolLM2's answers, tiny reward models)."""
    from b2b.models import load_tokenizer
    from b2b.reward import retokenized

    if profile.policy == profile.reward_backbone:
        return rm
    return retokenized(rm, rm_tokenizer, load_tokenizer(profile.policy), reward_config(profile, 1).max_length)


def train_from_backbone(profile: Profile, cfg: RewardConfig, tokenizer, train_pairs: list[dict],
                        eval_pairs: list[dict] | None = None, progress: bool = True):
    """(model, history): a fresh `cfg.num_labels` score head on the profile's backbone, seeded
    with `cfg.seed`, trained on the pairs; running out of GPU memory is a one-line error."""
    from b2b.models import load_reward_model
    from b2b.reward import train_reward_model

    torch.manual_seed(cfg.seed)
    rm = load_reward_model(profile.reward_backbone, num_labels=cfg.num_labels, pad_token_id=tokenizer.pad_token_id)
    history = out_of_memory(lambda: train_reward_model(rm, tokenizer, train_pairs, cfg, eval_pairs=eval_pairs,
                                                       progress=progress), lambda: _reward_oom(cfg))
    return rm, history


def _reward_oom(cfg: RewardConfig) -> str:
    """The one-line message for CUDA running out of memory while training a reward model."""
    pairs = cfg.micro_batch_size or cfg.batch_size
    fix = f"micro_batch_size: {pairs // 2}" if pairs > 1 else f"max_length: {cfg.max_length // 2}"
    if not cfg.gradient_checkpointing:
        fix = f"gradient_checkpointing: true or {fix}"
    return (f"reward model: out of GPU memory with batch_size {cfg.batch_size} pairs of up to max_length "
            f"{cfg.max_length} tokens; nothing was saved; try {fix} under reward: in a --config file "
            "(RewardConfig in a notebook)")


def reward_stage(profile: Profile, level: int = 1, data: str | None = None, out: str | Path | None = None,
                 cfg: RewardConfig | None = None, half: bool = False, probe_prompts: int | None = None,
                 progress: bool = True):
    """Train a reward model from the profile's backbone, evaluate it, save it to `out`.

    Returns (reward model, tokenizer, metrics, history, probe rows).
    """
    from b2b.models import load_tokenizer
    from b2b.reward import save_reward_model
    from b2b.reward_eval import evaluate_reward_model

    cfg = (cfg or reward_config(profile, level)).validate()
    train, test = preference_splits(profile, data)
    tok = load_tokenizer(profile.reward_backbone)
    t0 = time.time()
    rm, history = train_from_backbone(profile, cfg, tok, train, test, progress)
    train_seconds = time.time() - t0
    policy = prompts = policy_tok = None
    world = in_world(profile, data)
    if world:
        from b2b.models import load_policy

        policy, policy_tok = load_policy(profile.policy), load_tokenizer(profile.policy)
        prompts = heldout_prompts(profile, probe_prompts or (64 if profile.name == "ci" else 256))
    metrics, rows = evaluate_reward_model(rm, tok, test, policy, prompts, max_new_tokens=profile.max_new_tokens,
                                          seed=cfg.seed, max_length=cfg.max_length, world=world,
                                          train_pairs=train[: cfg.limit or None], policy_tokenizer=policy_tok)
    metrics.update(level=level, train_seconds=round(train_seconds, 2), train_pairs=len(train[: cfg.limit or None]),
                   test_pairs=len(test))
    if out is not None:
        save_reward_model(rm, tok, out, half=half)
        metrics["out"] = str(out)
    return rm, tok, metrics, history, rows


def shipped_reward_model(profile: Profile, level: int) -> Path | None:
    """The reward model shipped in `data/` for a tiny-world profile with its own policy, else None
    (`course_reward_model` finds or trains one for any profile)."""
    if not profile.world or not profile.own_models:
        return None
    p = Path(profile.preferences) / SHIPPED_REWARD_MODELS[level]
    return p if (p / "config.json").exists() else None

