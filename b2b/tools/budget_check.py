"""The step-time model (`b2b.budget`) against this CPU's measured phases: per shipped
`tiny-smollm2` run (every step timed) and phase, the median of measured / predicted seconds.

    python -m b2b.tools.budget_check      # the rates of the T4 and this CPU, then the check's table

tests/test_budget.py holds every ratio within 1.5x (docs/colab.md#the-step-time-model).
"""
from __future__ import annotations

from b2b.budget import SMOLLM2, T4, TINY_RM, TINY_WORLD_PROMPT_TOKENS, cpu_here, rl_step_seconds


def cpu_check() -> list[dict]:
    """The model against this CPU's measured phases: per shipped tiny-smollm2 run (every step timed)
    and phase, the median of measured / predicted seconds (tests/test_budget.py holds it within 1.5x)."""
    import statistics

    from b2b.tools import smollm2_world

    hw, rows = cpu_here(), []
    for name in smollm2_world.RUNS:
        h, cfg = smollm2_world.history(name), smollm2_world.recorded(name)
        ratios = {"generate": [], "score": [], "learn": []}
        for s in h.steps:
            p = rl_step_seconds(hw, SMOLLM2, TINY_RM, cfg["batch_size"], TINY_WORLD_PROMPT_TOKENS,
                                s["completions/mean_length"], cfg["max_new_tokens"], reference=True,
                                checkpointing=cfg["gradient_checkpointing"])
            for phase in ratios:
                ratios[phase].append(s[f"time/{phase}_s"] / p[phase])
        rows.append({"run": name, **{phase: statistics.median(r) for phase, r in ratios.items()}})
    return rows


def main() -> None:
    for hw in (T4, cpu_here()):
        print(f"{hw.name}: fp32 {hw.fp32_flops / 1e12:.3g} TFLOP/s, half {hw.half_flops / 1e12:.3g}, "
              f"{hw.bandwidth / 1e9:.0f} GB/s; train {hw.train_rate / 1e12:.3g} TFLOP/s, frozen "
              f"{hw.frozen_rate / 1e12:.3g}, decode {hw.decode_eff:.2f} of fp32 + {hw.decode_overhead_s * 1e3:.0f} ms "
              f"a position ({hw.source})")
    print("\n| tiny-smollm2 run (this CPU) | generate | score | learn |\n|---|---:|---:|---:|")
    for r in cpu_check():
        print(f"| {r['run']} | {r['generate']:.2f} | {r['score']:.2f} | {r['learn']:.2f} |")


if __name__ == "__main__":
    main()
