"""The stages behind `b2b run`: preference data for a run, then the reward-model stage.

    rm, metrics = reward_stage(get_profile("tiny"), level=1)
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from b2b.config import Profile
from b2b.data import heldout_prompts, load_preferences, split_prompts
from b2b.reward import RewardConfig

SHIPPED_REWARD_MODELS = {1: "rm-level1", 2: "rm-level2"}


def reward_config(profile: Profile, level: int, **overrides) -> RewardConfig:
    """The reward-model settings of a profile (notebooks 01-02 and `b2b run` use these)."""
    if profile.name == "colab":  # a pretrained 135M backbone: a gentle learning rate, longer texts
        cfg = RewardConfig(level=level, epochs=1.0, batch_size=16, lr=1e-5, max_length=1024, eval_every=50)
    elif profile.name == "colab-smoke":  # colab's recipe, two steps of 4 pairs: it runs, it does not learn much
        cfg = RewardConfig(level=level, epochs=1.0, batch_size=4, lr=1e-5, max_length=320, warmup=1, limit=8,
                           eval_every=1)
    else:
        cfg = RewardConfig(level=level, epochs=2.0, eval_every=250)  # tiny: two passes over 100,000 pairs
        if profile.name == "ci":
            # 62 steps: a short warm-up, or the cosine decay would end before the warm-up does
            cfg = dataclasses.replace(cfg, epochs=1.0, limit=int(20_000 * profile.scale), warmup=6, eval_every=25)
    return dataclasses.replace(cfg, **overrides)


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
        return load_reward_model(shipped)
    tok = load_tokenizer(profile.reward_backbone)
    train, test = preference_splits(profile, say=lambda _: None)
    cfg = reward_config(profile, level)
    rm, _, source = reward_model_for(profile, cfg, tok, train, test, progress=progress)
    if source == "trained":
        say(f"reward model: none yet for profile {profile.name} (notebook 0{level} trains it); trained one here by "
            f"its recipe on {_pairs(len(train[: cfg.limit or None]))} -> {course_reward_dir(profile, level)}")
    else:
        say(f"reward model: {source} (notebook 0{level}'s)")
    return rm


def train_from_backbone(profile: Profile, cfg: RewardConfig, tokenizer, train_pairs: list[dict],
                        eval_pairs: list[dict] | None = None, progress: bool = True):
    """(model, history): a fresh `cfg.num_labels` score head on the profile's backbone, seeded
    with `cfg.seed`, trained on the pairs; running out of GPU memory is a one-line error."""
    from b2b.models import load_reward_model
    from b2b.reward import train_reward_model

    torch.manual_seed(cfg.seed)
    rm = load_reward_model(profile.reward_backbone, num_labels=cfg.num_labels, pad_token_id=tokenizer.pad_token_id)
    history = None
    try:
        history = train_reward_model(rm, tokenizer, train_pairs, cfg, eval_pairs=eval_pairs, progress=progress)
    except torch.OutOfMemoryError:
        pass  # raised below, outside the handler, so the failed step's tensors are freed first
    if history is None:
        raise _reward_oom(cfg)
    return rm, history


def _pairs(n: int) -> str:
    return f"{n} pair" if n == 1 else f"{n} pairs"


def in_world(profile: Profile, data: str | None = None) -> bool:
    """Does a run on `data` live in the tiny world (so the gold judge can rate its answers)? Only
    with the profile's own tiny-world data: another file's prompts are not the world's."""
    if not profile.world:
        return False
    return data is None or Path(str(data)).expanduser().resolve() == Path(profile.preferences).resolve()


def preference_splits(profile: Profile, data: str | None = None, say=print) -> tuple[list[dict], list[dict]]:
    """(train pairs, held-out pairs) for a run.

    The tiny world ships its own held-out file; a single file or a hub dataset is split by a
    stable hash of the prompt (5% held out), so no prompt is in both. A file too small for that
    split (no pair held out, or none left to train on) is said in one line through `say`.
    """
    source = data or profile.preferences
    p = Path(str(source)).expanduser()
    if p.is_dir() and (p / "prefs_test.jsonl").exists():
        return load_preferences(p, "train"), load_preferences(p, "test")
    pairs = load_preferences(source, None if p.exists() else profile.preferences_split)
    test_prompts = set(split_prompts(pairs)["test"])
    train = [x for x in pairs if x["prompt"] not in test_prompts]
    test = [x for x in pairs if x["prompt"] in test_prompts]
    if not train:  # a handful of pairs can all hash into the held-out share: train on them all
        say(f"{source}: all {_pairs(len(pairs))} fell in the held-out share of the split; training on all of "
            "them, with no held-out pairs")
        return pairs, []
    if not test:
        say(f"{source}: {_pairs(len(pairs))} leave none held out (5% of the prompts, by hash); held-out "
            "metrics are skipped, training-pair accuracy is reported instead")
    return train, test


def _reward_oom(cfg: RewardConfig):
    """The one-line error for CUDA running out of memory while training a reward model."""
    from b2b.errors import TrainingError

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    fix = f"batch_size: {cfg.batch_size // 2}" if cfg.batch_size > 1 else f"max_length: {cfg.max_length // 2}"
    return TrainingError(f"reward model: out of GPU memory with batch_size {cfg.batch_size} pairs of up to "
                         f"max_length {cfg.max_length} tokens; nothing was saved; try {fix} under reward: in a "
                         "--config file (RewardConfig in a notebook)")


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
    policy = prompts = None
    world = in_world(profile, data)
    if world:
        from b2b.models import load_policy

        policy = load_policy(profile.policy)
        prompts = heldout_prompts(profile, probe_prompts or (64 if profile.name == "ci" else 256))
    metrics, rows = evaluate_reward_model(rm, tok, test, policy, prompts, max_new_tokens=profile.max_new_tokens,
                                          seed=cfg.seed, max_length=cfg.max_length, world=world,
                                          train_pairs=train[: cfg.limit or None])
    metrics.update(level=level, train_seconds=round(train_seconds, 2), train_pairs=len(train[: cfg.limit or None]),
                   test_pairs=len(test))
    if out is not None:
        save_reward_model(rm, tok, out, half=half)
        metrics["out"] = str(out)
    return rm, tok, metrics, history, rows


# ----------------------------------------------------------------------------- the RL stage

ALGO_SETTINGS = {
    "reinforce": {},                                                                     # notebook 03
    "rloo": dict(k=4, kl_coef=0.5, steps=600),                                           # notebook 06
    "reinforce_pp": dict(k=1, kl_coef=1.2, ppo_epochs=1, minibatches=2, steps=600),      # notebook 07
    "reinforce_pp_baseline": dict(k=4, kl_coef=0.5, ppo_epochs=1, minibatches=2, steps=600),
}
"""Each algorithm's settings in the tiny profile, over RLConfig's defaults (64 rollouts per step,
lr 2e-4, 64 new tokens).

REINFORCE++'s beta is 1.2 since the two-pass Bradley-Terry reward model (the showdown's pooled
evaluations, 2,048 answers per final policy, SFT 4.82): at beta 1.0 its seed-1 run ended 1.83
gold points above SFT with a KL of 2.05 nats, more than RLOO k = 4's 1.94 on that seed; at 1.2
seeds 0 and 1 end at +1.71 and +1.63 with KL 1.47 and 1.57 (1.60 and 2.05 at beta 1.0).

Everything below comes from runs on seed 0 (held-out gold of 512 prompts every 25 steps; SFT
4.79) against the one-pass Bradley-Terry reward model shipped before the two-pass one.
RLOO's KL coefficient, 600-step sweep: 0.1 collapses (gold 3.1 by step 350, KL 16 nats), 0.3 drifts into the reward model's greeting exploit (6.5 -> 5.9, KL 3), 0.5 peaks at 6.74 (step
325) and ends at 6.37 with KL 1.6 and distinct-2 at 83% of SFT's, 1.0 ends at 6.33 with KL 0.9.
600 steps, as notebook 04's collapse: vanilla REINFORCE needs more than 300 steps to collapse on
some seeds (seed 0 with today's sampler: gold 6.18 at step 125, 5.73 at 300, KL 7 and rising).
REINFORCE++, 300 steps: beta 0.5 with 2 epochs x 2 minibatches runs away from SFT (KL 4.2 by step
100, gold 6.1); beta 1.0 with one epoch of 2 minibatches ends at 5.95 with KL 1.3. 600 steps (SFT
4.74): beta 1.0 ends at 6.14 with KL 1.4; beta 0.7 ends at 6.19 with KL 2.3 (more KL, no more
gold: gold levels off near 6.2-6.3 from step 250 on either way); beta 0.5 is at KL 1.5 by step 100;
beta 1.0 with 2 epochs is at KL 2.7 by step 225 with gold 5.9. (`b2b run --algo reinforce_pp
--steps 600 --kl-coef B --skip-reward-training`, epochs through `--config`.) With one sample per
prompt its baseline is the batch mean over prompts of all families, far noisier than a group mean.
Two more at beta 1.0, 600 steps, seed 0: lr 1e-4 ends at 6.10 with KL 0.91 (the last ten evaluations
average 6.26, as at lr 2e-4, at two thirds of the KL); lr 1e-4 with beta 0.6 ends at 6.11 with KL
1.50 (last ten evaluations 6.28); k = 4 with global normalisation only (no group mean) ends at 6.16
with KL 1.51, evaluations 375-600 averaging 6.13: no better than k = 1.
REINFORCE++-baseline (k = 4, k2 KL loss) at beta 0.5, one epoch of 2 minibatches: 6.18 (SFT 4.74
with the sampler in use then), KL 1.2."""


def rl_config(profile: Profile, algo: str = "reinforce", **overrides):
    """The RL settings of a profile: notebook 03's (vanilla REINFORCE) in `tiny`, a few short steps in
    `ci`, SmolLM2-sized ones in `colab`. `b2b run` uses these, so the CLI and the notebooks agree."""
    from b2b.train import RLConfig

    algo_cfg = ALGO_SETTINGS.get(algo, {})
    if profile.name == "colab":  # a pretrained 135M policy: small steps, longer answers
        cfg = RLConfig(algo=algo, steps=150, batch_size=32, lr=1e-6, max_new_tokens=128, eval_every=25,
                       eval_prompts=128, **{k: v for k, v in algo_cfg.items() if k not in ("steps", "lr")})
    elif profile.name == "colab-smoke":  # colab's settings, a step or two of 4 short rollouts on a CPU
        cfg = RLConfig(algo=algo, steps=2 if "steps" in algo_cfg else 1, batch_size=4, lr=1e-6,
                       max_new_tokens=profile.max_new_tokens, eval_every=0, eval_prompts=profile.eval_prompts,
                       sample_every=1, checkpoint_every=10, keep_checkpoints=1,  # one checkpoint: the final step,
                       checkpoint_optimizer=False,                              # its policy only (0.54 GB, not 1.6)
                       **{k: v for k, v in algo_cfg.items() if k not in ("steps", "lr")})
    else:
        cfg = RLConfig(algo=algo, **algo_cfg)
        if profile.name == "ci":
            cfg = dataclasses.replace(cfg, steps=max(4, int(RLConfig.steps * profile.scale)), batch_size=16,
                                      eval_every=5, eval_prompts=32, checkpoint_every=5)
    return dataclasses.replace(cfg, **overrides)


def family_balanced(prompts: list[str], families: list[str]) -> list[str]:
    """Prompts repeated so that each family is equally common (each family's list cycled up to the
    longest one's length, families interleaved): drawing uniformly from the result draws the family
    uniformly, as the tiny world's SFT and preference data do. (Uniform over the prompts themselves
    would be 73% comparisons, the family with the most phrasings.)"""
    by: dict[str, list[str]] = {}
    for p, f in zip(prompts, families):
        by.setdefault(f, []).append(p)
    n = max((len(v) for v in by.values()), default=0)
    return [v[i % len(v)] for i in range(n) for v in by.values()]


def rl_prompts(profile: Profile, data: str | None = None) -> tuple[list[str], list[str], bool]:
    """(training prompts, held-out prompts, world) for a run: the tiny world's prompt files, or the
    prompts of a preference dataset split by a stable hash (then `world` is False: no gold judge)."""
    from b2b.data import MAX_PROMPT_CHARS, load_prompts

    if in_world(profile, data):
        from b2b.world import World

        world = World()
        prompts = load_prompts(profile.preferences, "train")
        return family_balanced(prompts, [world.spec(p).family for p in prompts]), heldout_prompts(profile), True
    train, test = preference_splits(profile, data, say=lambda _: None)  # the reward stage says it
    def uniq(pairs):
        return [p for p in dict.fromkeys(x["prompt"] for x in pairs) if len(p) <= MAX_PROMPT_CHARS]
    return uniq(train), uniq(test)[: profile.eval_prompts], False


def shipped_reward_model(profile: Profile, level: int) -> Path | None:
    """The reward model shipped in `data/` for a tiny-world profile with its own policy, else None
    (`course_reward_model` finds or trains one for any profile)."""
    if not profile.world or not profile.own_models:
        return None
    p = Path(profile.preferences) / SHIPPED_REWARD_MODELS[level]
    return p if (p / "config.json").exists() else None
