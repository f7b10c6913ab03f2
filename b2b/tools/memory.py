"""How much memory does each stage of a profile need (`b2b memory`)? Measured, not guessed.

    b2b memory --profile colab --policy ~/.cache/b2b/smollm2-135m-instruct --json

Each stage runs in a fresh Python process at the profile's own settings, on the worst case of its
inputs, and reports its peak memory:

    reward level 1 / 2   two optimizer steps of one micro-batch each (`micro_batch_size` pairs,
                         every sequence exactly `max_length` tokens: the chosen and rejected answers
                         are long texts cut to fit), then held-out scoring of 8 such pairs.
                         Accumulating more micro-batches per step adds no memory (gradients add in
                         place), so this is the peak of the whole run.
    rl <algo>            two RL steps (`b2b.step.rl_step`: sample, score, learn) of `batch_size`
                         rollouts whose prompts are `MAX_PROMPT_CHARS` characters long (the longest
                         a run samples from) and whose completions all run to `max_new_tokens`
                         (the end-of-turn token is hidden from the sampler), with AdamW's moments
                         already allocated, as from the second step on. The second step's
                         phase times are recorded too (`phases`), as the reward stage's second
                         optimizer step (`step_seconds`): `b2b.budget.measured_hardware` reads
                         them, so a run of `b2b memory --json` on a GPU calibrates the step-time model.

On the CPU the figure is the process's peak resident memory (Linux `ru_maxrss`) minus its
resident memory after the imports, before any model is loaded: weights, gradients, optimizer
state, activations, caches, and whatever the allocator holds. The process runs with glibc's mmap
threshold fixed at 128 KiB (`MALLOC_MMAP_THRESHOLD_=131072`), so that every tensor's memory goes
back to the system when it is freed: with glibc's default (a threshold that grows to 32 MiB), freed
blocks stay in the heap and the peak counts them (SmolLM2's colab-smoke RL step: 4.42 GB by
default, 3.43 GB with the fixed threshold, 3.53 GB by b2b's estimate). On a GPU it is
`torch.cuda.max_memory_allocated`. Activation and optimizer memory do not depend on the device,
so the CPU figure stands for a GPU's with two differences: a GPU adds its CUDA context (about
0.3-0.5 GB, outside torch's count) and, on a GPU, the frozen reference and reward models are
half precision (`b2b.models.pick_dtype`), which the CPU run (fp32) counts at twice their size.
`b2b.memory.estimate_*` give the same stages' analytic estimate beside each measurement.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from b2b.algorithms import get, names

MMAP_THRESHOLD = 131072
"""glibc's mmap threshold in the measured processes: allocations from 128 KiB on are their own mappings,
returned to the system when freed (see the module doc)."""
RL_ALGOS = names(memory_table=True)
"""The algorithms the measured table holds (`memory_table` in their records, `b2b.algorithms`) (GRPO and Dr. GRPO take REINFORCE++-baseline's step: the
same passes, one more exp per token)."""
T4_BYTES = 15 * 10**9
"""A Colab T4's memory as the memory table counts it: 15 GB (torch sees 14.7 GiB)."""
HEADROOM = 0.25
"""Each colab stage keeps at least this share of the T4 free."""


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _long_text(seed_text: str, chars: int) -> str:
    """`seed_text` repeated (sentence by sentence) to exactly `chars` characters."""
    words = (seed_text.strip() + " ") * (chars // max(1, len(seed_text)) + 2)
    return words[:chars]


def _reward_stage(profile, level: int, device: str) -> dict:
    import dataclasses

    import torch

    from b2b.models import load_reward_model, load_tokenizer
    from b2b.recipes import reward_config
    from b2b.reward import pair_accuracy, train_reward_model

    cfg = reward_config(profile, level)
    micro = cfg.micro_batch_size or cfg.batch_size
    tok = load_tokenizer(profile.reward_backbone)
    long_prompt = _long_text("Please read the following carefully and answer in detail.", 4 * cfg.max_length)
    long_answer = _long_text("Here is a careful, complete answer that goes on for a while.", 8 * cfg.max_length)
    pair = {"prompt": long_prompt, "chosen": [{"role": "user", "content": long_prompt},
                                              {"role": "assistant", "content": long_answer}],
            "rejected": [{"role": "user", "content": long_prompt},
                         {"role": "assistant", "content": long_answer[::-1]}]}
    pairs = [pair] * (2 * micro)
    run_cfg = dataclasses.replace(cfg, batch_size=micro, micro_batch_size=None, epochs=1.0, limit=None, warmup=1,
                                  eval_every=10**6)
    torch.manual_seed(0)
    base = _rss_bytes()
    rm = load_reward_model(profile.reward_backbone, num_labels=cfg.num_labels, device=device,
                           pad_token_id=tok.pad_token_id)
    from b2b.memory import estimate_reward_training

    estimate = estimate_reward_training(rm, cfg)
    from b2b.precision import Precision

    t0 = time.time()
    hist = train_reward_model(rm, tok, pairs, run_cfg, progress=False)
    pair_accuracy(rm, tok, [pair] * 8, max_length=cfg.max_length)
    return {"stage": f"reward level {level}", "baseline": base, "seconds": time.time() - t0, "estimate": estimate,
            "settings": {"batch_size": cfg.batch_size, "micro_batch_size": cfg.micro_batch_size,
                         "max_length": cfg.max_length, "gradient_checkpointing": cfg.gradient_checkpointing},
            "tokens": 2 * micro * cfg.max_length,
            # the second optimizer step's seconds (the first pays for warm-up): micro pairs of max_length tokens
            "step_seconds": hist[-1]["seconds"] - hist[-2]["seconds"], "step_pairs": micro,
            "precision": Precision(device).name}


def _rl_stage(profile, algo: str, device: str) -> dict:
    import torch

    from b2b.data import MAX_PROMPT_CHARS, load_preferences
    from b2b.models import checkpointing, frozen_copy, load_policy, load_reward_model, load_tokenizer
    from b2b.recipes import rl_config
    from b2b.step import rl_step

    cfg = rl_config(profile, algo)
    tok = load_tokenizer(profile.policy)
    seeds = [p["prompt"] for p in load_preferences(_smoke_data())]
    prompts = [_long_text(seeds[i % len(seeds)], MAX_PROMPT_CHARS) for i in range(cfg.batch_size // cfg.k)]
    batch = [p for p in prompts for _ in range(cfg.k)]
    # every completion runs to max_new_tokens: the sampler never sees its end-of-turn token
    unused = tok.convert_ids_to_tokens(0)
    tok.eos_token = unused if unused != tok.eos_token else tok.convert_ids_to_tokens(1)
    torch.manual_seed(0)
    base = _rss_bytes()
    policy = load_policy(profile.policy, device, trainable=True)
    ref = frozen_copy(policy) if cfg.kl_coef > 0 or cfg.track_kl else None
    rm = load_reward_model(profile.reward_backbone, num_labels=1, device=device, pad_token_id=tok.pad_token_id)
    rm.requires_grad_(False).eval()
    if cfg.gradient_checkpointing:
        checkpointing(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    for p in policy.parameters():  # AdamW's moments allocated by a step on zero gradients (which moves nothing)
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    gen = torch.Generator(device).manual_seed(0)
    from b2b.data import check_prompt_lengths
    from b2b.memory import estimate_rl_step

    prompt_tokens = check_prompt_lengths(tok, batch, cfg.max_new_tokens, None)
    estimate = estimate_rl_step(policy, rm, ref, cfg, prompt_tokens)
    from b2b.precision import Precision

    prec = Precision(device)  # as b2b.train runs it: autocast on a GPU
    t0 = time.time()
    m, _, state = rl_step(policy, tok, rm, batch, opt, gen, None, cfg, world=False, step=1, ref=ref, precision=prec)
    seconds = time.time() - t0
    m, _, _ = rl_step(policy, tok, rm, batch, opt, gen, state, cfg, world=False, step=2, ref=ref, precision=prec)
    return {"stage": f"rl {algo}", "baseline": base, "seconds": seconds, "estimate": estimate,
            "prompt_tokens": prompt_tokens,
            "settings": {"batch_size": cfg.batch_size, "k": cfg.k, "max_new_tokens": cfg.max_new_tokens,
                         "prompt_chars": MAX_PROMPT_CHARS, "gradient_checkpointing": cfg.gradient_checkpointing,
                         "updates": get(algo).updates(cfg)},
            "mean_length": m["completions/mean_length"], "tokens": cfg.batch_size * cfg.max_new_tokens,
            # the second step's phases (the first pays for warm-up), for b2b.budget.measured_hardware
            "phases": {k: m[f"time/{k}_s"] for k in ("generate", "score", "learn")}, "precision": prec.name,
            "reference": ref is not None}


def write_record(path, rows: list[dict], profile: str, device: str | None = None) -> dict:
    """`b2b memory --record PATH`: the rows with the device they were measured on and the date, as
    `b2b.budget.plan_hardware` reads them (a T4's record calibrates the colab plans). Returns it."""
    import datetime

    import torch

    if device is None:
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    rec = {"device": device, "date": datetime.date.today().isoformat(), "profile": profile, "rows": rows}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(rec, indent=1))
    return rec


def random_copy(src: str, out: Path) -> Path:
    """A model folder at `out` with `src`'s config and tokenizer and freshly initialised weights
    (safetensors): what `b2b memory --random-weights` measures where the real weights are not at hand
    (the memory and the time of a step do not depend on the weights' values). `src` needs only its
    config.json and tokenizer files."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from b2b.models import load_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(src).save_pretrained(out)
    return out


def _smoke_data():
    from b2b.config import SMOKE_DATA, data_dir

    return str(data_dir() / SMOKE_DATA)


def measure(stage: str, profile_name: str = "colab", policy: str | None = None) -> dict:
    """Run one stage ('reward1', 'reward2' or 'rl:<algo>') here and return its figures; call it in
    a fresh process (`measure_all` does) so that the peak is this stage's alone."""
    import torch

    from b2b.config import get_profile
    from b2b.models import default_device

    profile = get_profile(profile_name, policy=policy)
    device = default_device()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak_before = _peak_bytes()
    if stage.startswith("reward"):
        res = _reward_stage(profile, int(stage[-1]), device)
    elif stage.startswith("rl:"):
        res = _rl_stage(profile, stage[3:], device)
    else:
        raise ValueError(f"memory: unknown stage {stage!r} (expected reward1, reward2 or rl:<algo>)")
    if device == "cuda":
        res["peak_bytes"] = torch.cuda.max_memory_allocated()
        res["method"] = "torch.cuda.max_memory_allocated"
    else:
        res["peak_bytes"] = _peak_bytes() - max(res["baseline"], 0)
        res["method"] = "peak RSS minus RSS after imports, MALLOC_MMAP_THRESHOLD_=" + os.environ.get(
            "MALLOC_MMAP_THRESHOLD_", "(glibc default)")
        res["peak_before_bytes"] = peak_before
    res.update(profile=profile.name, device=device, threads=torch.get_num_threads(), torch=torch.__version__)
    return res


def measure_all(stages: list[str], profile_name: str = "colab", policy: str | None = None, say=print) -> list[dict]:
    """Each stage in its own `python -m b2b.tools.memory --one STAGE` process; their results in order."""
    out = []
    for stage in stages:
        cmd = [sys.executable, "-m", "b2b.tools.memory", "--one", stage, "--profile", profile_name]
        if policy:
            cmd += ["--policy", policy]
        say(f"memory: {stage} ...")
        env = {**os.environ, "TQDM_DISABLE": "1", "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"memory: stage {stage} failed: {p.stderr.strip().splitlines()[-1:]}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
        say(f"memory: {stage}: {res['peak_bytes'] / 1e9:.2f} GB in {res['seconds']:.0f} s")
        out.append(res)
    return out


def _settings_text(r: dict) -> str:
    st = r["settings"]
    if r["stage"].startswith("reward"):
        micro = f", {st['micro_batch_size']} per pass" if st["micro_batch_size"] else ""
        return f"{st['batch_size']} pairs{micro}, {st['max_length']} tokens" + \
            (", checkpointed" if st["gradient_checkpointing"] else "")
    return (f"{st['batch_size']} rollouts (k={st['k']}), {r.get('prompt_tokens', '?')} + {st['max_new_tokens']} tokens"
            + (f", {st['updates']} updates" if st["updates"] > 1 else "") + (", checkpointed" if st["gradient_checkpointing"] else ""))


def memory_table(rows: list[dict], device_bytes: int = T4_BYTES) -> str:
    """The measured stages as a Markdown table: settings, measured peak, b2b's estimate, and the
    headroom left on a device of `device_bytes` (a T4 by default)."""
    out = ["| stage | settings | measured peak (GB) | estimate (GB) | T4 headroom |", "|---|---|---:|---:|---:|"]
    for r in rows:
        head = 1 - r["peak_bytes"] / device_bytes
        out.append(f"| {r['stage']} | {_settings_text(r)} | {r['peak_bytes'] / 1e9:.2f} | "
                   f"{r['estimate']['total'] / 1e9:.2f} | {head:.0%} |")
    return "\n".join(out)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m b2b.tools.memory")
    ap.add_argument("--one", required=True)
    ap.add_argument("--profile", default="colab")
    ap.add_argument("--policy", default=None)
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.one, a.profile, a.policy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
