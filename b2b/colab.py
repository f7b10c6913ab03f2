"""Each colab notebook's plan: what it trains and measures in its default on a Colab T4, with
`b2b.budget`'s estimate of each stage, and the line a notebook prints before a long stage starts.

    stages = colab_plan("03", get_profile("colab"))
    b2b.budget.budget_line(stages)   # 'estimated on a Colab T4: about 14 minutes (reward model (level 1) 6 minutes; ...)'
    announce(profile, "03", "vanilla REINFORCE run")   # in a notebook, before the run's bar

tests/test_budget.py holds every planned notebook to `b2b.budget.NOTEBOOK_BUDGET_S` and 5 GB of disk, and
checks that each notebook announces exactly its plan's stages.
"""
from __future__ import annotations

import dataclasses

from b2b.budget import (HS2_NEW_SHARE, HS2_PROMPT_TOKENS, HS2_TEXT_TOKENS, SMOLLM2, SMOLLM2_RM, T4, Hardware, Stage,
                        eval_seconds, minutes, reward_stage, rl_stage, scoring_seconds)


def colab_plan(notebook: str, profile) -> list[Stage]:
    """What notebook `notebook` ("00".."03") trains and measures in its colab default, each with
    its estimate on a T4 (`Stage`). The stages marked `saved` are read back when an earlier notebook
    saved them where this one looks (Drive, `b2b.setup(drive=True)`)."""
    from b2b.recipes import quick, reward_config, rl_config, trl_check_config

    if notebook == "00":  # the tour: samples of the SFT policy, five temperatures over 48 held-out prompts
        mean_new = HS2_NEW_SHARE * 128
        gen = sum(eval_seconds(T4, SMOLLM2, SMOLLM2_RM, n, HS2_PROMPT_TOKENS, mean_new, 128, 128)
                  for n in (12, 48, 48, 48, 48, 48))
        return [Stage("samples and the temperature sweep", gen)]
    if notebook == "01":
        cfg = reward_config(profile, 1)
        check = trl_check_config(profile, cfg)
        trl = reward_stage(check)
        trl = dataclasses.replace(trl, label="cross-check with trl.RewardTrainer", saved=False, disk=0,
                                  seconds=2 * trl.seconds)  # b2b's trainer and TRL's, the same pairs and settings
        return [reward_stage(reward_config(profile, 1)), _probe_stage(1), trl]
    if notebook == "02":  # the ordinal model, notebook 01's (unless saved), both probed, 256 fresh samples scored
        return [reward_stage(reward_config(profile, 2)), reward_stage(reward_config(profile, 1)),
                _probe_stage(2, fresh=256)]
    if notebook == "03":
        cfg = rl_config(profile)
        short = quick(cfg, budget_s=90, evals=2, profile=profile)
        mine = rl_stage("your functions' short run", short)
        return [reward_stage(reward_config(profile, 1)), rl_stage("vanilla REINFORCE run", cfg),
                dataclasses.replace(mine, disk=0)]
    raise ValueError(f"colab_plan: no plan for notebook {notebook!r} (planned: {', '.join(PLANNED)})")


def _probe_stage(models: int, fresh: int = 0, hw: Hardware = T4, prompts: int = 256, max_new: int = 128) -> Stage:
    """Notebooks 01-02's probes: each of `models` reward models scores two fresh SFT answers to each
    of 256 prompts (`b2b.reward_eval.evaluate_reward_model`, sampled 128 at a time) and 500 held-out
    pairs; `fresh` more answers sampled and scored besides (notebook 02)."""
    ev = sum(eval_seconds(hw, SMOLLM2, SMOLLM2_RM, n, HS2_PROMPT_TOKENS, HS2_NEW_SHARE * max_new, max_new, 128)
             for n in [2 * prompts] * models + ([fresh] if fresh else []))
    return Stage("probes: SFT samples and held-out pairs", ev + models * 2 * scoring_seconds(
        hw, SMOLLM2_RM, 2 * 500, HS2_TEXT_TOKENS[1024]))


PLANNED = ("00", "01", "02", "03")
"""The notebooks whose colab default is planned so far (the others: docs/colab.md)."""


def announce(profile, notebook: str, label: str, hw: Hardware = T4) -> None:
    """Before a long stage of notebook `notebook` in the colab profile: print its estimate on a T4
    from the notebook's plan (`colab_plan`). colab-smoke (the colab code path on a CPU, in
    CI) checks that the plan holds the stage, so a notebook cannot train what its plan leaves out;
    the tiny world says nothing (its headers give its measured times)."""
    from b2b.errors import ConfigError

    if profile.name not in ("colab", "colab-smoke") or notebook not in PLANNED:
        return
    from b2b.config import get_profile

    stages = {s.label: s for s in colab_plan(notebook, get_profile("colab") if profile.name != "colab" else profile)}
    if label not in stages:
        raise ConfigError(f"budget: stage {label!r} is not in notebook {notebook}'s colab plan "
                          f"({', '.join(stages)}); add it to b2b.colab.colab_plan")
    s = stages[label]
    saved = " (read back instead when a saved copy is found)" if s.saved else ""
    print(f"{label}: {minutes(s.seconds)} on a {hw.name} by b2b.budget's estimate{saved}")


def plan_table(profile=None) -> str:
    """The planned notebooks' stages as a Markdown table: estimated minutes on a T4, disk, memory,
    and the total with and without the saved copies (`python -m b2b.colab`; docs/colab.md)."""
    from b2b.budget import plan_seconds
    from b2b.config import get_profile

    profile = profile or get_profile("colab")
    rows = ["| notebook | stage | T4 minutes (estimate) | disk (GB) | peak memory (GB, estimate) |",
            "|---|---|---:|---:|---:|"]
    for nb in PLANNED:
        stages = colab_plan(nb, profile)
        for s in stages:
            rows.append(f"| {nb} | {s.label}{' (saved: read back)' if s.saved else ''} | {s.seconds / 60:.1f} | "
                        f"{s.disk / 1e9:.2f} | {s.memory / 1e9:.1f} |")
        rows.append(f"| **{nb}** | **in a fresh runtime / with saved copies** | **{plan_seconds(stages) / 60:.1f} / "
                    f"{plan_seconds(stages, have_saved=True) / 60:.1f}** | **{sum(s.disk for s in stages) / 1e9:.2f}** | |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(plan_table())
