"""Each profile's recipes: the reward-model and RL settings notebooks and `b2b run` share.

    cfg = rl_config(get_profile("tiny"), "rloo")         # notebook 06's RLConfig
    rcfg = reward_config(get_profile("colab"), level=2)  # notebook 02's RewardConfig on SmolLM2

How the tiny profile's settings were chosen (the sweeps behind them): docs/tuning.md.
"""
from __future__ import annotations

import dataclasses

from b2b.algorithms import ALGORITHMS, get
from b2b.config import REAL_MODEL_SMOKE, SMOLLM2_WORLDS, Profile
from b2b.reward import RewardConfig
from b2b.rl_config import RLConfig


def reward_config(profile: Profile, level: int, **overrides) -> RewardConfig:
    """The reward-model settings of a profile (notebooks 01-02 and `b2b run` use these)."""
    if profile.name == "colab":  # a pretrained 135M backbone: a gentle learning rate, longer texts; sized for a
        # T4 by the measured memory table (docs/performance.md#memory): 2 passes of 8 pairs, checkpointed;
        # 1,536 of HelpSteer2's 8,207 pairs, so that it trains in minutes on a T4 (b2b.budget, docs/colab.md)
        cfg = RewardConfig(level=level, epochs=1.0, batch_size=16, micro_batch_size=8, gradient_checkpointing=True,
                           lr=1e-5, max_length=1024, eval_every=32, limit=COLAB_REWARD_PAIRS)
    elif profile.name == "colab-smoke":  # colab's recipe, two steps of 4 pairs: it runs, it does not learn much
        cfg = RewardConfig(level=level, epochs=1.0, batch_size=4, micro_batch_size=2, gradient_checkpointing=True,
                           lr=1e-5, max_length=160, warmup=1, limit=8, eval_every=1)
    else:  # tiny-smollm2 too: its reward models are the tiny ones, read through their own tokenizer
        cfg = RewardConfig(level=level, epochs=2.0, eval_every=250)  # tiny: two passes over 100,000 pairs
        if profile.name == "ci":
            # 62 steps: a short warm-up, or the cosine decay would end before the warm-up does
            cfg = dataclasses.replace(cfg, epochs=1.0, limit=int(20_000 * profile.scale), warmup=6, eval_every=25)
    return dataclasses.replace(cfg, **overrides)


COLAB_REWARD_PAIRS = 1536
"""The colab reward models' training pairs: the first 1,536 of HelpSteer2-binarized's 8,207 (one pass;
b2b.budget puts it at about 5 minutes on a T4, the whole set at about 24)."""
COLAB_RL_STEPS = 100
"""The colab profile's RL run: 100 steps of 32 rollouts (b2b.budget: about 6 minutes on a T4)."""

TINY_SMOLLM2_STEPS = 100
TINY_SMOLLM2_LR = 2e-5
"""The `tiny-smollm2` profile's RL run: 100 steps of 16 rollouts at a learning rate fit for a
pretrained 135M policy that should move within the run (docs/real-model.md)."""


def rl_config(profile: Profile, algo: str = "reinforce", **overrides):
    """The RL settings of a profile: notebook 03's (vanilla REINFORCE) in `tiny`, a few short steps in
    `ci`, SmolLM2-sized ones in `colab`. `b2b run` uses these, so the CLI and the notebooks agree."""
    algo_cfg = get(algo).settings  # the algorithm's recipe (b2b.algorithms; the sweeps: docs/tuning.md)
    if profile.name == "colab":  # a pretrained 135M policy: small steps, longer answers
        cfg = RLConfig(algo=algo, steps=COLAB_RL_STEPS, batch_size=32, lr=1e-6, max_new_tokens=128, eval_every=25,
                       eval_prompts=128, gradient_checkpointing=True,  # a T4 by the memory table
                       checkpoint_every=25, keep_checkpoints=1, checkpoint_optimizer=False,  # 0.54 GB of disk a run
                       **{k: v for k, v in algo_cfg.items() if k not in ("steps", "lr")})
    elif profile.name in REAL_MODEL_SMOKE:  # one step of 4 short rollouts on a CPU
        cfg = RLConfig(algo=algo, steps=1, batch_size=4, lr=1e-6,  # one step: `b2b run --steps 2` tests the second
                       gradient_checkpointing=True, max_new_tokens=profile.max_new_tokens, eval_every=0,
                       eval_prompts=profile.eval_prompts,
                       sample_every=1, checkpoint_every=10, keep_checkpoints=1,  # one checkpoint: the final step,
                       checkpoint_optimizer=False,                              # its policy only (0.54 GB, not 1.6)
                       **{k: v for k, v in algo_cfg.items() if k not in ("steps", "lr")})
    elif profile.name == "tiny-smollm2":  # SmolLM2 in the tiny world: 16 rollouts of up to 48 tokens a step
        cfg = RLConfig(algo=algo, steps=TINY_SMOLLM2_STEPS, batch_size=16, lr=TINY_SMOLLM2_LR,
                       max_new_tokens=profile.max_new_tokens, eval_every=10, eval_prompts=profile.eval_prompts,
                       sample_every=5, checkpoint_every=25, keep_checkpoints=1,
                       checkpoint_optimizer=False,  # 0.54 GB a run: a notebook's runs within Colab's 5 GB
                       **{k: v for k, v in algo_cfg.items() if k not in ("steps", "lr")})
    else:
        cfg = RLConfig(algo=algo, **algo_cfg)
        if profile.name == "ci":
            # 30 steps of 16: every cell's code runs (the test command's budget: docs/testing.md)
            cfg = dataclasses.replace(cfg, steps=max(4, int(RLConfig.steps * profile.scale) // 2), batch_size=16,
                                      eval_every=5, eval_prompts=32, checkpoint_every=5)
    return dataclasses.replace(cfg, **overrides)


def variance_settings(profile: Profile) -> dict:
    """Notebook 06's gradient-variance measurement (`b2b.analysis.gradient_variance`'s keyword
    arguments) in a profile: 40 batches of 16 prompts x 4 answers in `tiny`; on SmolLM2 (`colab`)
    half the prompts per batch and checkpointed log-probs, so the batch's retained forward and the
    running sums fit a T4 (`b2b.memory.estimate_gradient_variance`); a few batches where a run only
    shows the code runs."""
    kw = {"k": 4, "n_batches": 40, "prompts_per_batch": 16, "max_new_tokens": profile.max_new_tokens,
          "gradient_checkpointing": False}
    if profile.name == "colab":
        kw.update(n_batches=16, prompts_per_batch=8, gradient_checkpointing=True)
    elif profile.name == "tiny-smollm2":
        kw.update(n_batches=20, prompts_per_batch=8, gradient_checkpointing=True)
    elif profile.name in REAL_MODEL_SMOKE:  # two: the fewest a variance needs
        kw.update(n_batches=2, prompts_per_batch=1, gradient_checkpointing=True)
    elif profile.name == "ci":
        kw.update(n_batches=3)
    return kw


def trl_check_config(profile: Profile, cfg: RewardConfig) -> RewardConfig:
    """Notebook 01's cross-check with `trl.RewardTrainer`: both trainers, one pass over the same
    pairs at `cfg`'s settings; 20,000 pairs in `tiny`, 512 of at most 512 tokens on SmolLM2 (`colab`:
    micro-batches of 8 pairs, checkpointed, as `cfg`; `b2b.memory.estimate_reward_training`); 500 in `ci`."""
    limit = {"tiny": 20_000, "ci": 500, "colab": 512}.get(profile.name, cfg.limit)  # ci: it runs, nothing compared
    check = dataclasses.replace(cfg, epochs=1.0, limit=limit)
    if profile.name == "colab":
        check = dataclasses.replace(check, max_length=512)
    return check


NO_CLIP = 1e9
"""A clip range epsilon no ratio reaches: PPO's clipped objective without the clipping."""


def clip_demo(profile: Profile, steps: int | None = None) -> dict:
    """Notebook 07's clipping experiment: REINFORCE++-baseline (its notebook settings) with four
    epochs of four minibatches per rollout batch, so that the later minibatches are sixteen
    optimizer steps off-policy and the clipped ratio binds, and the same run with clipping off
    (epsilon = NO_CLIP). `steps`: default half the algorithm's run, as notebook 07's ablations.
    label -> RLConfig."""
    base = rl_config(profile, "reinforce_pp_baseline")
    steps = steps or max(base.steps // 2, min(base.steps, 4))
    # colab-smoke, tiny-smollm2-smoke (CPU runs of the real model that only show the code runs): 2 x 2
    n = 2 if profile.name in REAL_MODEL_SMOKE else 4
    on = dataclasses.replace(base, ppo_epochs=n, minibatches=n, steps=steps)
    if profile.name in SMOLLM2_WORLDS:  # no notebook loads their weights: no checkpoint (Colab's 5 GB, CI's disk)
        on = dataclasses.replace(on, checkpoint_every=0)
    return {f"{n} epochs x {n} minibatches, clip {on.clip:g}": on,
            f"{n} epochs x {n} minibatches, no clipping": dataclasses.replace(on, clip=NO_CLIP)}


QUICK_EVAL_S = 6.0
"""Seconds per held-out evaluation of a `tiny` run (512 prompts)."""


def quick(cfg, budget_s: float = 300.0, evals: int = 5, profile: Profile | None = None):
    """A version of `cfg` that trains within about `budget_s` seconds on a 2-core CPU in `tiny`
    (the same settings, fewer steps, `evals` held-out evaluations): for a learner who wants to see
    a notebook's run train rather than read it back. Never longer than `cfg` itself. On SmolLM2
    (`colab`, `tiny-smollm2`) the step and evaluation times are `b2b.budget`'s estimates on a T4
    (the GPU those profiles are sized for; a CPU takes several times longer)."""
    algo = get(cfg.algo)  # its `quick_step_s` is at its recipe's updates per batch; more cost proportionally more
    step_s = algo.quick_step_s * algo.updates(cfg) / algo.updates(RLConfig(**algo.settings))
    eval_s = QUICK_EVAL_S
    if profile is not None and (profile.name == "colab" or profile.name in SMOLLM2_WORLDS):
        from b2b.budget import TINY_RM, TINY_WORLD_PROMPT_TOKENS, rl_timing

        tiny_world = {"prompt": TINY_WORLD_PROMPT_TOKENS, "reward": TINY_RM, "sample_batch": profile.sample_batch}
        step, eval_s = rl_timing(cfg, **(tiny_world if profile.world else {}))
        step_s = step["total"]
    steps = int((budget_s - (evals + 1) * eval_s) / step_s) // 5 * 5
    steps = max(min(cfg.steps, steps), min(cfg.steps, 4))
    return dataclasses.replace(cfg, steps=steps, eval_every=max(1, steps // evals),
                               checkpoint_every=min(cfg.checkpoint_every, steps))


def your_step_run(profile: Profile, short) -> tuple[int, int]:
    """(steps, rollouts a step) of notebook 03's plain loop around the learner's own step: the short
    run's (`short`, `quick`'s version of the notebook's run); on SmolLM2 (`colab`) 8 rollouts a step,
    since the learner's step runs without gradient checkpointing or autocast (32 rollouts of 250 + 128
    tokens would need more than a T4's 15 GB by `b2b.memory`'s estimate)."""
    return short.steps, (min(8, short.batch_size) if profile.name in ("colab", "colab-smoke") else short.batch_size)


def long_run(profile: Profile, cfg):
    """Notebook 04's long run (and 05's, which compares with it): notebook 03's settings four times
    as long on the tiny policy; on SmolLM2 (`tiny-smollm2`) the profile's own 100 steps, within which
    its collapse already shows (docs/real-model.md) and which a T4 trains in about a minute. (Its
    smoke profile keeps the four times: four steps, enough for the notebooks' thirds and halves.)"""
    return cfg if profile.name == "tiny-smollm2" else dataclasses.replace(cfg, steps=4 * cfg.steps)


def showdown_settings(profile: Profile) -> dict:
    """Notebook 08's `run_showdown` keywords beyond the profile: its `seeds`, and `keep_weights`: on
    SmolLM2 (`tiny-smollm2`, and its smoke profile, so CI's real-model suite runs the same path) a
    cell's final policy is dropped once its pooled evaluation is kept, except the ones notebooks 05
    and 06 load (`b2b.tools.showdown.WEIGHTS_READ`), so the ten runs stay within Colab's 5 GB."""
    return {"seeds": seeds(profile, "08"), "keep_weights": profile.name not in SMOLLM2_WORLDS}


def seeds(profile: Profile, notebook: str = "04") -> tuple[int, ...]:
    """The seeds a notebook trains: three (notebook 04's collapse, notebook 08's showdown); one where
    a run only shows the code runs (`b2b.config.SMOKE_PROFILES`), and one in notebook 08's showdown on
    SmolLM2 (`tiny-smollm2`: ten methods x three seeds would be about half an hour on a T4; one seed
    fits the notebook's 15 minutes, `b2b.colab`)."""
    from b2b.config import SMOKE_PROFILES

    if profile.name in SMOKE_PROFILES or (notebook == "08" and profile.name == "tiny-smollm2"):
        return (0,)
    return (0, 1, 2)


# ----------------------------------------------------------------------------- notebook 08's showdown (b2b.tools.showdown)

METHODS = {label: (a.name, dict(over)) for a in ALGORITHMS.values() for label, over in a.showdown.items()}
"""label -> (algo, overrides of the algorithm's notebook settings), read from each record's `showdown`
(`b2b.algorithms`). "vanilla REINFORCE + KL" and
"RLOO k=4, no KL" complete a 2 x 2 with vanilla REINFORCE and RLOO k=4 + KL (moving-average or
leave-one-out baseline, KL penalty 0 or RLOO's 0.5): how much of RLOO's gain is the baseline, how
much the KL (notebook 06)."""


FINAL_EVALS = 4
"""Held-out evaluations pooled for each run's final policy (4 x 512 samples in `tiny`)."""
SFT_EVALS = 16
"""Held-out evaluations pooled for the SFT policy, the one point every gain is measured from."""
SMOKE_EVALS = (1, 2)
"""(final, SFT) pooled evaluations in `colab-smoke` and `tiny-smollm2-smoke`, CPU runs of the real model that only show
the code runs: one and two instead of FINAL_EVALS and SFT_EVALS."""


def pooled_repeats(profile, final: int | None = None, sft: int | None = None) -> tuple[int, int]:
    """(pooled evaluations per final policy, of the SFT policy): `final` and `sft` where given,
    else the profile's defaults (FINAL_EVALS and SFT_EVALS; SMOKE_EVALS in the smoke profiles)."""
    default_final, default_sft = SMOKE_EVALS if profile.name in REAL_MODEL_SMOKE else (FINAL_EVALS, SFT_EVALS)
    return (default_final if final is None else final), (default_sft if sft is None else sft)


WEIGHTS_READ = ("repetition penalty 1.2", "RLOO k=4 + KL")
"""The cells whose final policies other notebooks load (05: the penalised policy sampled without its
penalty; 06: RLOO's gradient variance): kept by `run_showdown(..., keep_weights=False)`."""

def method_config(profile, method: str, seed: int, steps: int | None = None):
    """The RLConfig of one showdown cell: the algorithm's notebook settings, the method's overrides,
    the seed, and one common number of steps (the longest of the methods' defaults unless given)."""
    algo, over = METHODS[method]
    if steps is None:
        steps = max(rl_config(profile, a).steps for a, _ in METHODS.values())
    return rl_config(profile, algo, **{**over, "seed": seed, "steps": steps})
