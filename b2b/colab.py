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

from b2b.budget import (HS2_NEW_SHARE, HS2_PROMPT_TOKENS, HS2_TEXT_TOKENS, SMOLLM2, SMOLLM2_RM, T4,
                        TINY_RM, TINY_WORLD_PROMPT_TOKENS, Hardware, Stage, eval_seconds, minutes, reward_stage,
                        rl_stage, scoring_seconds, sft_stage, step_flops)

GOLD = ("04", "05", "06", "07", "08")
"""The notebooks whose lesson needs the gold judge: on Colab they run SmolLM2 in the tiny world
(`b2b.setup(gold=True)` -> `tiny-smollm2`), and their plans are that profile's runs."""


def colab_plan(notebook: str, profile=None, hw: Hardware | None = None) -> list[Stage]:
    """What notebook `notebook` ("00".."08") trains and measures in its colab default, each with
    its estimate on a T4 (`Stage`). The stages marked `saved` are read back when an earlier notebook
    (or this one, before) saved them where this one looks (Drive, `b2b.setup(drive=True)`).
    Notebooks 00-03 run in `profile` (default `colab`); 04-08 in the tiny world with SmolLM2
    (`GOLD`: `tiny-smollm2`, whatever `profile` says). `hw`: default `b2b.budget.plan_hardware()`,
    the T4's assumed rates, or its measured efficiencies once a T4 has recorded them."""
    from b2b.budget import plan_hardware
    from b2b.recipes import quick, reward_config, rl_config, trl_check_config, your_step_run

    hw = hw or plan_hardware()
    if notebook in GOLD:
        return _gold_plan(notebook, hw)
    if profile is None:
        from b2b.config import get_profile

        profile = get_profile("colab")

    if notebook == "00":  # the tour: samples of the SFT policy, five temperatures over 48 held-out prompts
        mean_new = HS2_NEW_SHARE * 128
        gen = sum(eval_seconds(hw, SMOLLM2, SMOLLM2_RM, n, HS2_PROMPT_TOKENS, mean_new, 128, 128)
                  for n in (12, 48, 48, 48, 48, 48))
        return [Stage("samples and the temperature sweep", gen)]
    if notebook == "01":
        cfg = reward_config(profile, 1)
        check = trl_check_config(profile, cfg)
        trl = reward_stage(check, hw)
        trl = dataclasses.replace(trl, label="cross-check with trl.RewardTrainer", saved=False, disk=0,
                                  seconds=2 * trl.seconds)  # b2b's trainer and TRL's, the same pairs and settings
        return [reward_stage(reward_config(profile, 1), hw), _probe_stage(1, hw=hw), trl]
    if notebook == "02":  # the ordinal model, notebook 01's (unless saved), both probed, 256 fresh samples scored
        return [reward_stage(reward_config(profile, 2), hw), reward_stage(reward_config(profile, 1), hw),
                _probe_stage(2, fresh=256, hw=hw)]
    if notebook == "03":
        cfg = rl_config(profile)
        short = quick(cfg, budget_s=90, evals=2, profile=profile)
        mine = rl_stage("your functions' short run", short, hw)
        steps, batch = your_step_run(profile, short)  # a plain loop: fp32, no checkpointing, two evaluations
        plain = dataclasses.replace(short, steps=steps, batch_size=batch, gradient_checkpointing=False, eval_every=0,
                                    checkpoint_every=0)
        yours = rl_stage("your step's short run", plain, dataclasses.replace(hw, autocast_eff=0.0))
        return [reward_stage(reward_config(profile, 1), hw), rl_stage("vanilla REINFORCE run", cfg, hw),
                dataclasses.replace(mine, disk=0), yours]
    raise ValueError(f"colab_plan: no plan for notebook {notebook!r} (planned: {', '.join(PLANNED)})")


def _gold_plan(notebook: str, hw: Hardware = T4) -> list[Stage]:
    """Notebooks 04-08 in `tiny-smollm2` (SmolLM2 in the tiny world) on a T4. A run another notebook
    trains too (the showdown's seed-0 cells) is `saved`: read back from Drive where it was kept."""
    import dataclasses as dc

    from b2b.config import smollm2_world
    from b2b.recipes import METHODS, clip_demo, long_run, method_config, pooled_repeats, quick, rl_config, seeds

    profile = smollm2_world("tiny-smollm2", policy="smollm2-135m-tiny-sft")  # its settings; nothing fine-tuned
    tw = {"hw": hw, "prompt": TINY_WORLD_PROMPT_TOKENS, "reward": TINY_RM, "sample_batch": profile.sample_batch}

    def run(label, *cfgs, saved=True):
        stages = [rl_stage(label, c, **tw) for c in cfgs]
        return Stage(label, sum(x.seconds for x in stages), disk=sum(x.disk for x in stages),
                     memory=max(x.memory for x in stages), saved=saved,
                     detail={"runs": len(cfgs), "steps": [c.steps for c in cfgs]})

    def evals(label, n, saved=False):  # n held-out evaluations of a trained policy
        one = eval_seconds(hw, SMOLLM2, TINY_RM, profile.eval_prompts, TINY_WORLD_PROMPT_TOKENS,
                           HS2_NEW_SHARE * profile.max_new_tokens, profile.max_new_tokens, profile.sample_batch)
        return Stage(label, n * one, saved=saved, detail={"evaluations": n})

    sft = sft_stage(hw)
    vanilla = long_run(profile, rl_config(profile))
    if notebook == "04":
        return [sft, run("vanilla REINFORCE run", vanilla),
                run("seeds 1 and 2", *(dc.replace(vanilla, seed=s) for s in seeds(profile, "04")[1:]))]
    if notebook == "05":
        return [sft, run("vanilla REINFORCE run", vanilla),
                run("the two penalised runs", dc.replace(vanilla, repetition_penalty=1.2),
                    dc.replace(vanilla, ngram_penalty=4.0)),
                evals("the penalised policy sampled with and without its penalty", 2)]
    if notebook == "06":
        rloo = rl_config(profile, "rloo")
        half = max(rloo.steps // 2, min(rloo.steps, 4))
        corners = [method_config(profile, m, seed=0, steps=rloo.steps) for m in ("vanilla REINFORCE + KL", "RLOO k=4, no KL")]
        mine = quick(rloo, budget_s=120, evals=2, profile=profile)
        return [sft, run("RLOO k=4 + KL run", rloo), _variance_stage(profile, hw),
                run("vanilla REINFORCE run", dc.replace(vanilla, steps=rloo.steps)), run("the 2 x 2's other corners", *corners),
                run("the beta sweep", *(dc.replace(rloo, kl_coef=b, steps=half) for b in (0.0, 0.1, 1.0))),
                dc.replace(run("your advantages' short run", mine, saved=False), disk=0)]
    if notebook == "07":
        pp, base = rl_config(profile, "reinforce_pp"), rl_config(profile, "reinforce_pp_baseline")
        half = max(pp.steps // 2, min(pp.steps, 4))
        ablations = [dc.replace(pp, kl_coef=0.0, steps=half), dc.replace(pp, whiten=False, steps=half),
                     dc.replace(pp, minibatches=1, steps=half)]
        return [sft, run("REINFORCE++ and REINFORCE++-baseline runs", pp, base), run("ablations", *ablations),
                run("clipping runs", *clip_demo(profile).values()),
                run("GRPO and Dr. GRPO runs", rl_config(profile, "grpo"), rl_config(profile, "dr_grpo"))]
    if notebook == "08":
        cells = [method_config(profile, m, seed=s) for m in METHODS for s in seeds(profile, "08")]
        final, sft_n = pooled_repeats(profile)
        from b2b.recipes import WEIGHTS_READ, showdown_settings

        showdown = run("the showdown", *cells)
        if not showdown_settings(profile)["keep_weights"]:  # only the cells notebooks 05 and 06 load keep theirs
            per_run = showdown.disk / len(cells)
            showdown = dc.replace(showdown, disk=per_run * sum(m in WEIGHTS_READ for m in METHODS))
        pooled = evals("pooled evaluations", final * len(cells) + sft_n, saved=True)
        full = rl_config(profile, "rloo").steps
        side = rl_config(profile, "rloo", steps=max(full // 4, min(full, 4)))
        b2b_side = rl_stage("b2b", side, **tw)
        trl = Stage("TRL side by side", 2 * b2b_side.seconds + evals("", 2).seconds, saved=True,
                    memory=b2b_side.memory, detail={"steps": side.steps})  # TRL's RLOOTrainer: assumed b2b's time
        lora = dc.replace(side, lora_r=8, lr=2e-3, steps=max(side.steps // 4, 2), eval_every=0)
        return [sft, dc.replace(showdown, seconds=showdown.seconds + pooled.seconds), trl,
                dc.replace(run("LoRA", lora), disk=0)]
    raise ValueError(f"colab_plan: no plan for notebook {notebook!r} (planned: {', '.join(PLANNED)})")


def _variance_stage(profile, hw: Hardware = T4) -> Stage:
    """Notebook 06's gradient variance (`b2b.analysis.gradient_variance` at `variance_settings`), for
    the SFT and the RLOO policies: per batch, sampling (one warm-up batch besides) and scoring; three
    backward passes (fp32) in the first pass over the batches, the same again in the second (each
    batch's gradients recomputed, not kept)."""
    from b2b.memory import estimate_gradient_variance
    from b2b.recipes import variance_settings

    kw = variance_settings(profile)
    rows, new, n = kw["prompts_per_batch"] * kw["k"], HS2_NEW_SHARE * kw["max_new_tokens"], kw["n_batches"]
    f = step_flops(SMOLLM2, TINY_RM, rows, TINY_WORLD_PROMPT_TOKENS, new, reference=False,
                   checkpointing=kw["gradient_checkpointing"])
    gen = eval_seconds(hw, SMOLLM2, TINY_RM, rows, TINY_WORLD_PROMPT_TOKENS, new, kw["max_new_tokens"], rows)
    per_policy = (n + 1) * gen + 2 * 3 * n * f["learn"] / (hw.train_eff * hw.fp32_flops)
    from b2b.budget import _meta_models

    mem = estimate_gradient_variance(_meta_models()[0], _meta_models()[3], kw["prompts_per_batch"], kw["k"],
                                     kw["max_new_tokens"], int(TINY_WORLD_PROMPT_TOKENS * 2.4),
                                     kw["gradient_checkpointing"], n)["total"]
    return Stage("gradient variance", 2 * per_policy, memory=mem, detail={"batches": n, "rows": rows})


def _probe_stage(models: int, fresh: int = 0, hw: Hardware = T4, prompts: int = 256, max_new: int = 128) -> Stage:
    """Notebooks 01-02's probes: each of `models` reward models scores two fresh SFT answers to each
    of 256 prompts (`b2b.reward_eval.evaluate_reward_model`, sampled 128 at a time) and 500 held-out
    pairs; `fresh` more answers sampled and scored besides (notebook 02)."""
    ev = sum(eval_seconds(hw, SMOLLM2, SMOLLM2_RM, n, HS2_PROMPT_TOKENS, HS2_NEW_SHARE * max_new, max_new, 128)
             for n in [2 * prompts] * models + ([fresh] if fresh else []))
    return Stage("probes: SFT samples and held-out pairs", ev + models * 2 * scoring_seconds(
        hw, SMOLLM2_RM, 2 * 500, HS2_TEXT_TOKENS[1024]))


PLANNED = ("00", "01", "02", "03") + GOLD
"""The notebooks whose colab default is planned: all of them."""


def announce(profile, notebook: str, label: str, hw: Hardware | None = None) -> None:
    """Before a long stage of notebook `notebook` on SmolLM2 (`colab` for 00-03, `tiny-smollm2` for
    04-08, where `b2b.setup(gold=True)` puts a Colab learner): print its estimate on a T4 from the
    notebook's plan (`colab_plan`). The smoke profiles (the same code paths on a CPU, in CI) check
    that the plan holds the stage, so a notebook cannot train what its plan leaves out; the tiny
    world says nothing (its headers give its measured times)."""
    from b2b.errors import ConfigError

    from b2b.config import SMOLLM2_WORLDS

    where = SMOLLM2_WORLDS if notebook in GOLD else ("colab", "colab-smoke")
    if profile.name not in where or notebook not in PLANNED:
        return
    from b2b.config import get_profile

    from b2b.budget import plan_hardware

    hw = hw or plan_hardware()
    plan_profile = None if notebook in GOLD else (profile if profile.name == "colab" else get_profile("colab"))
    stages = {s.label: s for s in colab_plan(notebook, plan_profile, hw)}
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

    from b2b.budget import plan_hardware

    profile, hw = profile or get_profile("colab"), plan_hardware()
    minutes_of = "T4 minutes (estimate)" if hw is T4 else f"{hw.name} minutes (estimate on measured efficiencies)"
    rows = [f"| notebook | stage | {minutes_of} | disk (GB) | peak memory (GB, estimate) |",
            "|---|---|---:|---:|---:|"]
    for nb in PLANNED:
        stages = colab_plan(nb, profile, hw)
        for s in stages:
            rows.append(f"| {nb} | {s.label}{' (saved: read back)' if s.saved else ''} | {s.seconds / 60:.1f} | "
                        f"{s.disk / 1e9:.2f} | {s.memory / 1e9:.1f} |")
        rows.append(f"| **{nb}** | **in a fresh runtime / with saved copies** | **{plan_seconds(stages) / 60:.1f} / "
                    f"{plan_seconds(stages, have_saved=True) / 60:.1f}** | **{sum(s.disk for s in stages) / 1e9:.2f}** | |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(plan_table())
