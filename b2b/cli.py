"""Command line (also `python -m b2b`):

    b2b build-data [--out data] [--check]        # the tiny world's data files
    b2b build-tiny [--data data] [--steps N]     # the tiny SFT policy in data/tiny-sft
    b2b evaluate --policy PATH [--reward-model PATH] [--n N] [--json]
    b2b run --level 1|2 --only-reward-model [--data PATH] [--out DIR] [--json]
    b2b build-reward-models [--data data]        # the shipped tiny reward models
    b2b figures [--out img]                      # the README's figures

Errors in the user's input are printed as one line (`error: ...`) with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from b2b.errors import B2BError


def _cmd_build_data(args) -> int:
    from pathlib import Path

    from b2b.build_data import check_data, write_data
    from b2b.data import load_preferences, load_prompts

    if args.check:
        for split in ("train", "test"):  # schema first: a broken line is named, not just "differs"
            if (Path(args.out) / f"prefs_{split}.jsonl").exists():
                load_preferences(args.out, split)
            if (Path(args.out) / f"prompts_{split}.jsonl").exists():
                load_prompts(args.out, split)
        bad = check_data(args.out)
        if bad:
            print(f"data differs from the generator in {args.out}: {', '.join(bad)} "
                  "(run `b2b build-data` to rewrite it)", file=sys.stderr)
            return 1
        print(f"{args.out}: all data files match the generator")
        return 0
    for p in write_data(args.out):
        print(p)
    return 0


def _cmd_build_tiny(args) -> int:
    import dataclasses

    from b2b.tiny import TinyConfig, build_tiny

    cfg = TinyConfig() if args.steps is None else dataclasses.replace(TinyConfig(), steps=args.steps)
    t0 = time.process_time()
    out = build_tiny(args.data, args.out, cfg)
    print(f"wrote {out} ({time.process_time() - t0:.0f} CPU-seconds in all)")
    return 0


def _cmd_evaluate(args) -> int:
    from b2b.config import default_device, get_profile
    from b2b.data import heldout_prompts
    from b2b.evaluate import evaluate_policy
    from b2b.models import load_policy, load_reward_model, load_tokenizer

    profile = get_profile(args.profile)
    device = default_device()
    tok = load_tokenizer(args.policy)
    policy = load_policy(args.policy, device)
    rm = load_reward_model(args.reward_model, device=device) if args.reward_model else None
    prompts = heldout_prompts(profile, args.n)
    args.max_new_tokens = args.max_new_tokens or profile.max_new_tokens
    t0 = time.time()
    res = evaluate_policy(policy, tok, prompts, rm, world=profile.world, batch_size=profile.sample_batch,
                          max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    seconds = time.time() - t0
    samples = res.pop("samples")
    print(f"b2b evaluate  policy={args.policy}  profile={profile.name}  prompts={len(prompts)}  "
          f"T={args.temperature}  max_new_tokens={args.max_new_tokens}  ({seconds:.1f}s)")
    names = [("gold_mean", "reward/gold_mean"), ("proxy_mean", "reward/proxy_mean"),
             ("eos_rate", "completions/eos_rate"), ("distinct_2", "completions/distinct_2"),
             ("reference_distinct_2", "  generator's own distinct_2"), ("mean_length", "completions/mean_length")]
    _print_metrics(res, names)
    print("samples:")
    for s in samples[:args.samples]:
        extra = "".join(f"  {k}={s[k]:.2f}" for k in ("gold", "proxy") if k in s)
        print(f"  {s['prompt']!r} -> {s['response']!r}{extra}")
    if args.json:
        print(json.dumps({**res, "profile": profile.name, "policy": str(args.policy), "seconds": round(seconds, 2)}))
    return 0


def _print_metrics(m: dict, labels: list[tuple[str, str]]) -> None:
    """One aligned line per (key, label) present in `m`."""
    for key, label in labels:
        if key in m:
            print(f"  {label:<34} {m[key]:.3f}")


def _print_reward_metrics(m: dict) -> None:
    _print_metrics(m, [("pair_accuracy", "held-out pair accuracy"), ("gold_accuracy", "agreement with gold (SFT pairs)"),
                       ("gold_spearman", "Spearman with gold"), ("length_corr", "reward vs length (corr)"),
                       ("gold_length_corr", "  gold vs length, for comparison"), ("train_seconds", "training seconds")])


def _cmd_run(args) -> int:
    import dataclasses

    from b2b.config import get_profile
    from b2b.errors import ConfigError
    from b2b.pipeline import reward_config, reward_stage

    if not args.only_reward_model:
        raise ConfigError("run: the RL stage is not part of b2b yet; use --only-reward-model "
                          "(trains and evaluates the reward model)")
    profile = get_profile(args.profile)
    cfg = reward_config(profile, args.level, seed=args.seed)
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    out = args.out or f"runs/rm-level{args.level}"
    _, _, m, _, _ = reward_stage(profile, args.level, args.data, out, cfg, progress=not args.json)
    kind = "Bradley-Terry regression" if args.level == 1 else "ten-class ordinal"
    print(f"b2b run --level {args.level} --only-reward-model  ({kind} reward model, profile={profile.name}, "
          f"{m['train_pairs']} pairs) -> {out}")
    _print_reward_metrics(m)
    if args.json:
        print(json.dumps(m))
    return 0


def _cmd_build_reward_models(args) -> int:
    from pathlib import Path

    from b2b.config import get_profile
    from b2b.pipeline import SHIPPED_REWARD_MODELS, reward_stage

    profile = get_profile("tiny")
    for level, name in SHIPPED_REWARD_MODELS.items():
        out = Path(args.data) / name
        _, _, m, _, _ = reward_stage(profile, level, args.data, out, half=True)
        (out / "b2b_metrics.json").write_text(json.dumps(m, indent=1) + "\n")
        print(f"wrote {out}")
        _print_reward_metrics(m)
    return 0


def _cmd_figures(args) -> int:
    from b2b.plots import write_readme_figures

    for p in write_readme_figures(args.out):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="b2b", description="b2b: RLHF with REINFORCE, back to basics")
    sub = p.add_subparsers(dest="cmd", required=True)
    bd = sub.add_parser("build-data", help="write (or --check) the tiny world's data files")
    bd.add_argument("--out", default="data", help="data directory (default: data)")
    bd.add_argument("--check", action="store_true", help="exit 1 if the files differ from the generator")
    bd.set_defaults(func=_cmd_build_data)
    bt = sub.add_parser("build-tiny", help="train the tiny SFT policy into DATA/tiny-sft")
    bt.add_argument("--data", default="data", help="data directory holding sft.jsonl (default: data)")
    bt.add_argument("--out", default=None, help="output directory (default: DATA/tiny-sft)")
    bt.add_argument("--steps", type=int, default=None, help="SFT optimizer steps (default: 3000)")
    bt.set_defaults(func=_cmd_build_tiny)
    ev = sub.add_parser("evaluate", help="sample on held-out prompts and report quality")
    ev.add_argument("--policy", required=True, help="policy directory or hub id")
    ev.add_argument("--reward-model", default=None, help="reward model directory (adds proxy_mean)")
    ev.add_argument("--n", type=int, default=None, help="held-out prompts (default: the profile's)")
    ev.add_argument("--profile", default=None, help="ci | tiny | colab (default: resolved)")
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's (tiny: 64)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--samples", type=int, default=8, help="samples to print")
    ev.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    ev.set_defaults(func=_cmd_evaluate)
    rn = sub.add_parser("run", help="the pipeline: a reward model (--only-reward-model), then RL")
    rn.add_argument("--level", type=int, choices=(1, 2), default=1,
                    help="1: Bradley-Terry regression reward model; 2: ten-class ordinal")
    rn.add_argument("--only-reward-model", action="store_true", help="train and evaluate the reward model only")
    rn.add_argument("--data", default=None, help="preference data: JSONL file, data directory or hub dataset id")
    rn.add_argument("--out", default=None, help="output directory (default: runs/rm-levelL)")
    rn.add_argument("--profile", default=None, help="ci | tiny | colab (default: resolved)")
    rn.add_argument("--epochs", type=float, default=None, help="reward-model epochs (default: the profile's)")
    rn.add_argument("--seed", type=int, default=0)
    rn.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    rn.set_defaults(func=_cmd_run)
    br = sub.add_parser("build-reward-models", help="train the shipped tiny reward models into DATA/rm-level{1,2}")
    br.add_argument("--data", default="data")
    br.set_defaults(func=_cmd_build_reward_models)
    fg = sub.add_parser("figures", help="redraw the README's figures into img/")
    fg.add_argument("--out", default="img")
    fg.set_defaults(func=_cmd_figures)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # keep the output to what b2b reports
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        return args.func(args)
    except B2BError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
