"""The course's whole pipeline in one call, as `b2b run` runs it: a reward model for a level
(trained, or one already there read back), then RL with one algorithm, the final policy saved
beside the run, and the before / after evaluation.

    res = run_course(get_profile("tiny"), level=1, algo="rloo", skip_reward_training=True,
                     rl={"steps": 50})
    res["final"]["gold_mean"], res["peak_step"]      # what `b2b run --json` prints

Every input is checked before anything is written (the data, the prompts against the policy's
context, an output folder that already holds a run), each as a one-line error.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from b2b.errors import ConfigError

RM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
"""What a saved reward model (`only_reward_model`, `b2b run --only-reward-model --out DIR`) consists of."""
REWARD_METRICS = [("pair_accuracy", "held-out pair accuracy"), ("train_pair_accuracy", "training-pair accuracy"),
                  ("gold_accuracy", "agreement with gold (SFT pairs)"), ("gold_spearman", "Spearman with gold"),
                  ("length_corr", "reward vs length (corr)"), ("gold_length_corr", "  gold vs length, for comparison"),
                  ("train_seconds", "training seconds")]


def metric_lines(m: dict, labels: list[tuple[str, str]]) -> list[str]:
    """One aligned line per (key, label) present in `m`."""
    return [f"  {label:<34} {'n/a' if m[key] is None else format(m[key], '.3f')}" for key, label in labels if key in m]


def check_out(out: Path, names: tuple[str, ...], overwrite: bool, resume_hint: bool = True) -> None:
    """Refuse, before anything is written, an output folder that already holds any of `names` (an
    earlier run or a saved model), unless `overwrite`."""
    from b2b.runs import RUN_FILES

    found = [n for n in names if (out / n).exists()]
    if not found or overwrite:
        return
    what = "a run" if set(found) & set(RUN_FILES) else "a model"
    hint = f"--resume {out} continues it, " if what == "a run" and resume_hint else ""
    raise ConfigError(f"run: {out} already holds {what} ({', '.join(found)}); {hint}--overwrite starts over, "
                      "or choose another --out")


def run_course(profile, level: int = 1, algo: str = "reinforce", *, data: str | None = None, out=None,
               resume=None, overwrite: bool = False, skip_reward_training: bool = False,
               only_reward_model: bool = False, reward: dict | None = None, rl: dict | None = None,
               seed: int = 0, progress: bool = True, say: Callable[[str], None] = print) -> dict:
    """Reward model, then RL; returns the run's summary (`b2b.evaluate.summary`, plus
    'evaluated_on'), or with `only_reward_model` the reward model's metrics.

    level: 1 (Bradley-Terry) or 2 (ordinal). reward / rl: overrides of the profile's recipes
    (`b2b.recipes.reward_config`, `rl_config`). out: the run directory (default runs/levelL-ALGO,
    or runs/rm-levelL with `only_reward_model`). skip_reward_training: use the reward model in
    out/reward_model, else the course's own (shipped in the tiny world, or the notebooks'). resume:
    a run directory to continue. say: where the progress lines go."""
    from b2b.recipes import reward_config
    from b2b.reward_models import reward_stage
    from b2b.runs import RUN_FILES

    cfg = reward_config(profile, level, **{"seed": seed, **(reward or {})}).validate()
    kind = "Bradley-Terry regression" if level == 1 else "ten-class ordinal"
    if only_reward_model:
        if skip_reward_training:
            raise ConfigError("run: --only-reward-model and --skip-reward-training exclude each other")
        out = Path(out or f"runs/rm-level{level}")
        check_out(out, RM_FILES + RUN_FILES + ("reward_model", "policy"), overwrite, resume_hint=False)
        _, _, m, _, _ = reward_stage(profile, level, data, out, cfg, progress=progress)
        say(f"b2b run --level {level} --only-reward-model  ({kind} reward model, profile={profile.name}, "
            f"{m['train_pairs']} pairs) -> {out}")
        for line in metric_lines(m, REWARD_METRICS):
            say(line)
        return m

    from b2b.algorithms import get
    from b2b.config import default_device
    from b2b.data import locate_prompt, rl_prompts
    from b2b.evaluate import comparison_table, summary
    from b2b.models import load_config, load_policy, load_reward_model, load_tokenizer
    from b2b.recipes import rl_config
    from b2b.reward_models import course_reward_dir, for_policy
    from b2b.rollout import check_prompts_fit
    from b2b.runs import latest_checkpoint
    from b2b.train import train

    out = Path(resume or out or f"runs/level{level}-{algo}")
    rl_cfg = dataclasses.replace(rl_config(profile, algo, seed=seed), **(rl or {})).validate()
    retrain = not (resume or skip_reward_training)
    if resume and latest_checkpoint(resume) is None:
        raise ConfigError(f"run: --resume {resume}: no checkpoint found (expected checkpoints/step-N inside a "
                          "run directory)")
    if not resume:
        check_out(out, RUN_FILES + ("config.json", "model.safetensors", "policy") + (("reward_model",) if retrain else ()),
                  overwrite)
    # every input is checked before anything is written: data, prompts against the policy's context
    prompts, eval_prompts, world = rl_prompts(profile, data)
    held_out = bool(eval_prompts)
    if not eval_prompts:  # a file too small to hold prompts out: before/after on what it has, labelled
        eval_prompts = prompts[: profile.eval_prompts]
        say(f"no held-out prompts: the evaluations before and after use {len(eval_prompts)} training prompts "
            "(not a held-out measure)")
    tok = load_tokenizer(profile.policy)
    check_prompts_fit(load_config(profile.policy), tok, None, prompts, eval_prompts[: rl_cfg.eval_prompts or None],
                      rl_cfg.max_new_tokens, locate=lambda p: locate_prompt(data or profile.preferences, p))
    if overwrite and not resume:  # a stale final policy must not outlive the run that replaces it
        shutil.rmtree(out / "policy", ignore_errors=True)
    device = default_device()
    t0 = time.time()
    rm_dir = out / "reward_model"
    if not retrain:
        if not (rm_dir / "config.json").exists():
            rm_dir = course_reward_dir(profile, level)  # shipped (tiny world), or the notebooks' own
            if not (rm_dir / "config.json").exists():
                raise ConfigError(f"run: --skip-reward-training: no reward model in {out / 'reward_model'}, none "
                                  f"shipped for profile {profile.name} with this policy and none in {rm_dir}; "
                                  "train one first (drop the flag)")
        rm, rm_tok = load_reward_model(rm_dir, device=device), load_tokenizer(rm_dir)
        say(f"reward model: {rm_dir} ({kind}, not retrained)")
    else:
        rm, rm_tok, m, _, _ = reward_stage(profile, level, data, rm_dir, cfg, progress=progress)
        say(f"reward model: {kind}, {m['train_pairs']} pairs -> {rm_dir}")
        for line in metric_lines(m, REWARD_METRICS):
            say(line)
    rm = for_policy(profile, rm, rm_tok)  # the policy's answers re-encoded when its tokenizer is not the reward model's
    policy = load_policy(profile.policy, device, trainable=True)
    say(f"RL: {algo}, {rl_cfg.steps} steps x {rl_cfg.batch_size} rollouts ({rl_cfg.k} per prompt), lr {rl_cfg.lr:g}, "
        f"KL coef {rl_cfg.kl_coef:g} ({rl_cfg.kl_estimator}), "
        f"repetition penalty {rl_cfg.repetition_penalty:g} (sampling) / {rl_cfg.ngram_penalty:g} (reward), "
        f"profile={profile.name} -> {out}")
    history = train(policy, tok, rm, prompts, rl_cfg, eval_prompts=eval_prompts, world=world, out=out,
                    resume=resume, overwrite=overwrite, progress=progress, eval_batch_size=profile.sample_batch,
                    profile=profile.name)
    policy.save_pretrained(out / "policy")
    tok.save_pretrained(out / "policy")
    (out / "policy" / "b2b_run.json").write_text(json.dumps(
        {"reward_model": str(Path(rm_dir).resolve()), "level": level, "readout": rl_cfg.readout,
         "temperature": rl_cfg.temperature, "repetition_penalty": rl_cfg.repetition_penalty,
         "max_new_tokens": rl_cfg.max_new_tokens}, indent=1) + "\n")
    res = summary(history, time.time() - t0)
    res["evaluated_on"] = "held-out prompts" if held_out else "training prompts"
    say(f"{'held-out' if held_out else 'training-prompt'} evaluation ({len(eval_prompts)} prompts), before and "
        f"after {res['steps']} steps:")
    say(comparison_table(res["sft"], res["final"], get(algo).label))
    if res["peak_gold_mean"] is not None:
        say(f"peak gold {res['peak_gold_mean']:.3f} at step {res['peak_step']}; "
            f"median step {res['median_step_s']:.2f} s; policy -> {out / 'policy'}")
    return res
