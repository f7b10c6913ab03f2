"""The one setup line of every notebook (`b2b.setup`), and on Colab where a learner's reward
models and runs are kept between notebooks (`keep_on_drive`).

    profile = b2b.setup()                 # resolve the profile, seed, say where we run
    profile = b2b.setup(drive=True)       # on Colab: keep runs/ on Google Drive for the next notebook
    profile = b2b.setup(gold=True)        # notebooks 04-08: on Colab, SmolLM2 in the tiny world (a gold judge)
"""
from __future__ import annotations

from pathlib import Path

from b2b.config import GOLD_WORLD, _ACTIVE, Profile, _shown, default_device, get_profile

DRIVE_DIR = "/content/drive/MyDrive/b2b"
"""Where `setup(drive=True)` keeps a Colab learner's runs and reward models (`$B2B_DRIVE_DIR` overrides)."""


def on_colab() -> bool:
    import sys

    return "google.colab" in sys.modules


def keep_on_drive(drive: bool, profile: "Profile", say=print) -> Path | None:
    """On Colab, where a learner's reward models and runs are kept between notebooks. `drive`:
    Google Drive is mounted and the working directory moves to `DRIVE_DIR`, so every notebook's
    `runs/...` is there, found again by the next notebook in a fresh runtime; returns that folder.
    Without it, one line says what a fresh runtime will cost (the next notebook trains the reward
    model again, `b2b.budget`'s minutes). Off Colab: nothing (the working directory is kept)."""
    import os

    if not on_colab():
        if drive:
            say("DRIVE = True: not on Colab, so runs stay in ./runs here")
        return None
    if not drive:
        if profile.name == "colab":
            from b2b.budget import minutes, reward_stage
            from b2b.recipes import reward_config

            say(f"runs and reward models stay in {os.getcwd()}/runs for this runtime only: in a new runtime the next "
                f"notebook trains the reward model again ({minutes(reward_stage(reward_config(profile, 1)).seconds)} "
                "on a T4); "
                "DRIVE = True in the setup cell keeps them on Google Drive")
        elif profile.name == "tiny-smollm2":
            from b2b.budget import minutes, sft_stage

            say(f"SmolLM2's tiny-world fine-tune and the runs stay in this runtime only: in a new runtime the next "
                f"notebook fine-tunes SmolLM2 again ({minutes(sft_stage().seconds)} on a T4) and retrains the runs "
                "it shares with this one; DRIVE = True in the setup cell keeps them on Google Drive")
        return None
    target = Path(os.environ.get("B2B_DRIVE_DIR") or DRIVE_DIR)
    if not target.parent.exists():
        from google.colab import drive as colab_drive  # only on Colab

        colab_drive.mount(str(Path(DRIVE_DIR).parents[1]))
    target.mkdir(parents=True, exist_ok=True)
    os.chdir(target)
    # the tiny world's SmolLM2 (`b2b.setup(gold=True)`), fine-tuned once, beside the runs
    os.environ.setdefault("B2B_SMOLLM2_TINY", str(target / "smollm2-135m-tiny-sft"))
    found = sorted(p.name for p in (target / "runs").glob("*")) if (target / "runs").is_dir() else []
    say(f"runs and reward models are kept on Google Drive in {target}/runs"
        + (f" ({len(found)} saved there: {', '.join(found[:6])}{', ...' if len(found) > 6 else ''})" if found else ""))
    return target


def setup(profile: str | None = None, seed: int = 0, policy: str | None = None,
          reward_backbone: str | None = None, drive: bool = False, gold: bool = False) -> Profile:
    """The one setup line of every notebook: resolve the profile (with another `policy` if given,
    see `get_profile`), seed everything, say where we run, and say once when there is no gold
    judge to measure reward hacking with. `drive` (on Colab): keep runs and reward models on
    Google Drive, where the next notebook finds them (`keep_on_drive`). `gold`: the notebook's
    lesson needs the gold judge (notebooks 04-08), so a profile without one runs SmolLM2 in the tiny
    world instead (`b2b.config.GOLD_WORLD`: colab -> tiny-smollm2, colab-smoke -> tiny-smollm2-smoke;
    SmolLM2 is fine-tuned on the tiny world once, on Drive with `drive`)."""
    import dataclasses
    import random

    import torch

    try:  # weight-loading progress bars add nothing to a notebook
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    p = get_profile(profile, policy=policy, reward_backbone=reward_backbone)
    world = GOLD_WORLD.get(p.name) if gold else None
    keep_on_drive(drive, dataclasses.replace(p, name=world) if world else p)
    if world:
        print(f"{p.name} has no gold judge, and this notebook's lesson needs one: it runs SmolLM2 in the tiny world "
              f"({world}: SmolLM2-135M-Instruct fine-tuned on the tiny world's demonstrations, the shipped tiny reward "
              "models, the gold judge; docs/real-model.md)")
        p = get_profile(world, policy=policy, reward_backbone=reward_backbone)
    _ACTIVE[:] = [p.name]
    random.seed(seed)
    torch.manual_seed(seed)
    print(f"b2b profile: {p.name} | policy: {_shown(p.policy)} | device: {default_device()} | seed: {seed}")
    if p.reward_backbone != p.policy:
        print(f"reward-model backbone: {_shown(p.reward_backbone)}")
    if not p.world:
        print("no gold judge here (the tiny world's prompts are not this data's): the notebook teaches from what "
              "remains, the proxy reward, KL to SFT, distinct-2, length and the samples themselves")
    return p
