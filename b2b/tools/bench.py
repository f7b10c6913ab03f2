"""How fast is one RL step, and where does its time go (`b2b bench`)?

    result = run_bench(get_profile("tiny"), algos=("reinforce", "rloo", "reinforce_pp"))
    result["algos"]["rloo"]["step_s"]     # median seconds per step after warm-up

Every algorithm runs the same fixed workload: `batch_size` rollouts per step (`batch_size / k`
prompts, k samples each), at most `max_new_tokens` new tokens, the shipped Bradley-Terry reward
model, the algorithm's own settings otherwise (KL coefficient, epochs, minibatches). Each one
starts from the same SFT policy and trains for `warmup + steps` steps in the one training loop
(`b2b.train`, no evaluation, no checkpoints); the loop's own per-step timers give the split:

    generate_s   sampling the completions (batched, KV cache)
    score_s      reward model + reference policy (+ the rollout policy's log-probs for REINFORCE++)
    learn_s      policy forward with gradients, backward, optimizer step(s)
    step_s       the three together;  tokens_per_s = completion tokens sampled / generate_s

Each figure is the median over the measured steps (the first `warmup` steps are dropped: they pay
for allocator growth and lazy initialisation). `--vs-trl` also trains `trl.RLOOTrainer` on the same
policy, reward model, prompts, k, batch and completion length in the same process, its steps
alternating with b2b's RLOO steps (one TRL step, then one b2b step, ...), and reports `trl_step_s`
and `trl_ratio`, the median over the measured pairs of TRL's step over the b2b step beside it: on
a machine whose speed drifts (a shared CPU), two steps a second apart see the same machine, while
two runs a minute apart need not. `--repeat R` runs R rounds of every contestant in turn and takes
medians over all rounds' steps.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from b2b.budget import model_shape  # noqa: F401 (b2b.tools.bench.model_shape, as before)
from b2b.algorithms import get, names

BENCH_ALGOS = names(bench=True)
"""The algorithms timed by default (`bench` in their records, `b2b.algorithms`)."""
SPLIT = ("generate_s", "score_s", "learn_s")


def bench_config(profile, algo: str, batch_size: int = 64, k: int = 4, max_new_tokens: int = 48, steps: int = 10,
                 warmup: int = 2, seed: int = 0):
    """The RLConfig of one benchmark cell: the algorithm's notebook settings on the fixed workload."""
    from b2b.recipes import rl_config

    return rl_config(profile, algo, batch_size=batch_size, k=k, max_new_tokens=max_new_tokens, steps=warmup + steps,
                     eval_every=0, sample_every=0, checkpoint_every=0, seed=seed).validate()


def peak_memory_mb(device) -> float:
    """Peak memory in MiB: allocated by torch on a GPU (since the last reset), else the peak resident
    memory of the whole process so far (Linux `ru_maxrss`)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_stats(steps: list[dict], warmup: int, batch_size: int) -> dict:
    """Medians over the measured steps (after `warmup`) of the loop's `time/*` metrics, and the
    sampling throughput (completion tokens per second of generation)."""
    rows = steps[warmup:]
    if not rows:
        raise ValueError(f"bench: no measured steps (got {len(steps)} steps, warm-up {warmup})")
    out = {"step_s": statistics.median(r["time/step_s"] for r in rows)}
    out.update({k: statistics.median(r[f"time/{k}"] for r in rows) for k in SPLIT})
    out["tokens_per_s"] = statistics.median(r["completions/mean_length"] * batch_size / r["time/generate_s"]
                                            for r in rows)
    out["completion_tokens"] = statistics.fmean(r["completions/mean_length"] for r in rows)
    return out


def run_bench(profile, algos=BENCH_ALGOS, batch_size: int = 64, k: int = 4, max_new_tokens: int = 48,
              steps: int = 10, warmup: int = 2, vs_trl: bool = False, seed: int = 0, repeat: int = 1) -> dict:
    """Time each algorithm's step on the fixed workload (see the module docstring); returns
    {'algos': {algo: {step_s, generate_s, score_s, learn_s, tokens_per_s, peak_mem_mb, ...}},
    'device', 'torch', 'threads', the workload, and with `vs_trl` 'trl_step_s', 'b2b_step_s', 'trl_ratio'}.

    With `vs_trl`, b2b's RLOO run is the one whose steps alternate with TRL's (so its `wall_s`, and
    on a GPU its peak memory, include TRL's side); `trl_ratio_steps` holds each measured pair's
    TRL / b2b ratio and `trl_ratio` is their median.
    `repeat` > 1 runs `repeat` rounds, each one run of every algorithm (and TRL) in turn, so that a
    machine that speeds up or slows down over minutes weighs on every contestant alike: each figure
    is then the median over all rounds' measured steps; the per-round figures are kept in
    `step_s_rounds` and `trl_ratio_rounds` (each round's median pair ratio)."""
    from b2b import decoding
    from b2b.config import default_device
    from b2b.decoding import LlamaDecoder
    from b2b.models import load_policy, load_tokenizer
    from b2b.data import rl_prompts
    from b2b.train import Run, train

    if vs_trl and "rloo" not in algos:  # checked before any run
        raise ValueError("bench: --vs-trl compares with b2b's RLOO step: keep 'rloo' among the algorithms")
    if repeat < 1:
        raise ValueError(f"bench: expected repeat >= 1, got {repeat}")
    device = default_device()
    tok = load_tokenizer(profile.policy)
    rm = bench_reward_model(profile, device)
    prompts, _, world = rl_prompts(profile)
    res = {"profile": profile.name, "device": _device_name(device), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "batch_size": batch_size, "k": k, "max_new_tokens": max_new_tokens,
           "steps": steps, "warmup": warmup, "repeat": repeat, "algos": {}}
    measured = {algo: [] for algo in algos}  # the measured steps of every round
    rounds = {algo: [] for algo in algos}  # per round: the median step
    trl_times, trl_pairs, trl_rounds = [], [], []  # TRL's steps; each over the b2b step beside it
    cfgs = {algo: bench_config(profile, algo, batch_size, k, max_new_tokens, steps, warmup, seed) for algo in algos}
    for _ in range(repeat):
        for algo in algos:
            cfg = cfgs[algo]
            policy = load_policy(profile.policy, device, trainable=True)
            # sampled through b2b.decoding.LlamaDecoder, or through the model's own forward
            res["lean_decode"] = decoding.LEAN_DECODE and LlamaDecoder.supports(policy)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            if vs_trl and algo == "rloo":  # b2b's RLOO steps alternate with TRL's, one each in turn
                from b2b.tools.trl_bridge import trl_rloo

                b2b_run = Run(policy, tok, rm, prompts, cfg, world=world, progress=False)
                rows = []
                t = trl_rloo(profile.policy, rm, prompts, cfg, on_step=lambda: rows.append(b2b_run.next()))
                if len(t["step_times"]) != cfg.steps or len(rows) != cfg.steps:
                    raise RuntimeError(f"bench: TRL reported {len(t['step_times'])} step times and b2b ran "
                                       f"{len(rows)} steps, expected {cfg.steps} each")
                pairs = [(tt, r["time/step_s"]) for tt, r in zip(t["step_times"][warmup:], rows[warmup:])]
                trl_times += [tt for tt, _ in pairs]
                trl_pairs += [tt / bt for tt, bt in pairs]
                trl_rounds.append(statistics.median(tt / bt for tt, bt in pairs))
            else:
                rows = train(policy, tok, rm, prompts, cfg, world=world, progress=False).steps
            rounds[algo].append(step_stats(rows, warmup, batch_size)["step_s"])
            measured[algo] += rows[warmup:]
            res["algos"][algo] = {"peak_mem_mb": round(max(peak_memory_mb(device),
                                                           res["algos"].get(algo, {}).get("peak_mem_mb", 0)), 1),
                                  "wall_s": round(time.perf_counter() - t0, 2), "kl_coef": cfg.kl_coef,
                                  "updates_per_step": get(algo).updates(cfg)}
            del policy
    for algo in algos:
        res["algos"][algo] = {**step_stats(measured[algo], 0, batch_size), **res["algos"][algo],
                              "step_s_rounds": rounds[algo]}
    if vs_trl:
        res["trl_step_s"] = statistics.median(trl_times)
        res["b2b_step_s"] = res["algos"]["rloo"]["step_s"]
        res["trl_ratio"] = statistics.median(trl_pairs)
        res["trl_ratio_rounds"] = trl_rounds
        res["trl_ratio_steps"] = trl_pairs
    from b2b.models import load_config

    shape, rm_shape = model_shape(load_config(profile.policy)), model_shape(rm.config)
    res["limits"] = machine_limits(shape["hidden"], shape["intermediate"], device)
    res["prompt_tokens"] = mean_prompt_tokens(tok, prompts)
    for algo in algos:
        res["algos"][algo]["account"] = phase_account(res["algos"][algo], cfgs[algo], shape, rm_shape,
                                                      res["prompt_tokens"], res["limits"])
    if vs_trl:
        res["trl_ratio_ceiling"] = res["trl_step_s"] / res["algos"]["rloo"]["account"]["floor_s"]
    return res


# ----------------------------------------------------------------------------- where the step's time goes

def machine_limits(hidden: int, intermediate: int, device, rows: int = 2048, reps: int = 10) -> dict:
    """This machine's ceilings for the account: `matmul_gflops`, the faster of a model's two MLP
    products ((rows x hidden) @ (hidden x intermediate) and back) in fp32, and `bandwidth_gbs`, a copy of
    256 MiB (bytes read plus bytes written per second), each the best of `reps` tries."""
    a = torch.randn(rows, hidden, device=device)
    w = torch.randn(hidden, intermediate, device=device)
    b = torch.randn(rows, intermediate, device=device)
    wt = w.t().contiguous()
    best = float("inf"), float("inf")
    for _ in range(reps + 2):
        t = _timed(lambda: a @ w, device), _timed(lambda: b @ wt, device)
        best = min(best[0], t[0]), min(best[1], t[1])
    gflops = 2 * rows * hidden * intermediate / min(best) / 1e9
    src = torch.empty(2**26, device=device)
    dst = torch.empty_like(src)
    copy_s = min(_timed(lambda: dst.copy_(src), device) for _ in range(reps))
    return {"matmul_gflops": round(gflops, 1), "bandwidth_gbs": round(2 * src.numel() * 4 / copy_s / 1e9, 1)}


def _timed(fn, device) -> float:
    """Seconds `fn()` takes, the device's queued work finished before and after."""
    t0 = _now(device)
    fn()
    return _now(device) - t0


def _now(device) -> float:
    """The time now, after a GPU has finished its queued work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def mean_prompt_tokens(tokenizer, prompts: list) -> float:
    """Mean chat-formatted prompt length in tokens over the prompt pool a bench draws from."""
    from b2b.data import chat_prompts

    texts = chat_prompts(tokenizer, prompts[:512])
    return statistics.fmean(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def phase_flops(cfg, shape: dict, rm_shape: dict, prompt_tokens: float, completion_tokens: float) -> dict:
    """`b2b.budget.step_flops` for an RLConfig and `model_shape` dicts, keyed by the step's timing
    names (`generate_s`, `score_s`, `learn_s`)."""
    from b2b.budget import Shape, step_flops

    flops = step_flops(Shape("policy", shape["block_params"], shape["head_params"], 0),
                       Shape("reward", rm_shape["block_params"], 0, 0), cfg.batch_size, prompt_tokens,
                       completion_tokens, reference=cfg.kl_coef > 0 or cfg.track_kl, epochs=cfg.ppo_epochs,
                       checkpointing=cfg.gradient_checkpointing, rollout_pass=get(cfg.algo).updates(cfg) > 1)
    return {f"{phase}_s": f for phase, f in flops.items()}


def phase_account(stats: dict, cfg, shape: dict, rm_shape: dict, prompt_tokens: float, limits: dict) -> dict:
    """Each phase of one algorithm's measured step against its floor on this machine: its FLOPs
    (`phase_flops`) at the measured matrix-product rate, and for sampling also the time to read
    the policy's weights from memory once per sampled position (a decoder step reads all of them; the
    mean completion length counts the steps, fewer than the longest row takes);
    the floor is the larger of the two. `floor_s` sums the phases' floors: no implementation doing
    the same fp32 work on this machine takes less per step."""
    flops = phase_flops(cfg, shape, rm_shape, prompt_tokens, stats["completion_tokens"])
    rate = limits["matmul_gflops"] * 1e9
    weights_bytes = 4 * (shape["block_params"] + shape["head_params"])
    out = {}
    for phase, f in flops.items():
        floor = f / rate
        if phase == "generate_s":
            floor = max(floor, stats["completion_tokens"] * weights_bytes / (limits["bandwidth_gbs"] * 1e9))
        out[phase.removesuffix("_s")] = {"gflop": round(f / 1e9, 2), "measured_s": round(stats[phase], 4),
                                         "gflops": round(f / 1e9 / stats[phase], 1),
                                         "floor_s": round(floor, 4), "of_floor": round(floor / stats[phase], 3)}
    out["floor_s"] = round(sum(p["floor_s"] for p in out.values()), 4)
    return out


def account_table(res: dict) -> str:
    """`phase_account` as Markdown: per algorithm and phase, GFLOP, measured seconds, GFLOP/s, the
    floor and the measured time's share of it."""
    lim = res["limits"]
    rows = ["| algorithm | phase | GFLOP | measured (s) | GFLOP/s | floor (s) | floor / measured |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for algo, a in res["algos"].items():
        acc = a["account"]
        for phase in ("generate", "score", "learn"):
            p = acc[phase]
            rows.append(f"| {algo} | {phase} | {p['gflop']:.1f} | {p['measured_s']:.3f} | {p['gflops']:.0f} | "
                        f"{p['floor_s']:.3f} | {p['of_floor']:.0%} |")
        rows.append(f"| {algo} | step | | {a['step_s']:.3f} | | {acc['floor_s']:.3f} | {acc['floor_s'] / a['step_s']:.0%} |")
    rows.append(f"\nceilings: matrix products {lim['matmul_gflops']:.0f} GFLOP/s (fp32), memory {lim['bandwidth_gbs']:.0f} GB/s; "
                f"mean prompt {res['prompt_tokens']:.1f} tokens")
    return "\n".join(rows)


def bench_reward_model(profile, device, say=print):
    """The reward model the benchmark scores with: the course's level-1 model when the profile has
    one (shipped in data/, or trained earlier into `runs/rm-<profile>-level1`), else a fresh
    Bradley-Terry head on the reward backbone, said in one line: a step's time depends on the
    model's size and the sampled lengths, not on what its score head has learnt, so the benchmark
    of a new policy does not train a reward model first."""
    import json
    from pathlib import Path

    from b2b.models import load_reward_model, load_tokenizer
    from b2b.reward_models import TRAINING_RECORD, course_reward_dir, shipped_reward_model

    home = course_reward_dir(profile, 1)
    record = home / TRAINING_RECORD
    if shipped_reward_model(profile, 1) is not None or (
            record.exists() and json.loads(record.read_text()).get("backbone") == Path(profile.reward_backbone).name):
        return load_reward_model(home, device=device)
    say(f"bench: no level-1 reward model for profile {profile.name} in {home}: scoring with a fresh score head on "
        f"{profile.reward_backbone} (the same size and time; its scores are untrained)")
    tok = load_tokenizer(profile.reward_backbone)
    return load_reward_model(profile.reward_backbone, num_labels=1, device=device, pad_token_id=tok.pad_token_id)


def _device_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def markdown_table(res: dict) -> str:
    """The benchmark as a Markdown table: one row per algorithm (and TRL's RLOO with --vs-trl)."""
    head = "| algorithm | step (s) | generate (s) | score (s) | learn (s) | tokens/s | peak MiB |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for algo, a in res["algos"].items():
        rows.append(f"| {algo} | {a['step_s']:.3f} | {a['generate_s']:.3f} | {a['score_s']:.3f} | "
                    f"{a['learn_s']:.3f} | {a['tokens_per_s']:.0f} | {a['peak_mem_mb']:.0f} |")
    if "trl_step_s" in res:
        rows.append(f"| TRL RLOOTrainer | {res['trl_step_s']:.3f} | | | | | |")
    return "\n".join(rows)


def plot_bench(res: dict, path=None):
    """Stacked bars of the step-time split per algorithm (TRL's RLOO step beside, when measured)."""
    import matplotlib.pyplot as plt

    names = list(res["algos"])
    fig, ax = plt.subplots(figsize=(7.6, 3.2))
    left = [0.0] * len(names)
    colors = {"generate_s": "#4c72b0", "score_s": "#dd8452", "learn_s": "#55a868"}
    for part in SPLIT:
        vals = [res["algos"][n][part] for n in names]
        ax.barh(names, vals, left=left, color=colors[part], label=part.removesuffix("_s"))
        left = [a + b for a, b in zip(left, vals)]
    if "trl_step_s" in res:
        ax.barh(["TRL RLOOTrainer"], [res["trl_step_s"]], color="#8c8c8c", label="TRL (whole step)")
    ax.invert_yaxis()
    ax.set_xlabel("seconds per step (median)")
    ax.set_title(f"RL step, {res['batch_size']} rollouts (k={res['k']}) x {res['max_new_tokens']} new tokens\n"
                 f"{res['device']}, torch {res['torch']}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def sampling_bench(profile, batch_size: int = 16, max_new_tokens: int = 32, rounds: int = 4, seed: int = 0) -> dict:
    """Sampling alone (the REINFORCE++ seed's `compare_performance` mode): b2b's sampler
    (`b2b.rollout.sample_completions`: the lean decoder where the model is a Llama, compaction of
    finished rows) against transformers' `model.generate` (do_sample, the same temperature 1, top-k
    and top-p off, its own KV cache), on the same `batch_size` prompts and `max_new_tokens`, the
    same policy, taking turns. tokens_per_s counts each batch's sampled completion tokens (up to and
    with the end-of-turn token) over its wall-clock time; each figure is the median over `rounds`
    turns after one warm-up turn each. Returns {'b2b_tokens_per_s', 'hf_tokens_per_s', 'ratio' (b2b
    over transformers), mean lengths, the workload}."""
    from b2b.config import default_device
    from b2b.data import rl_prompts
    from b2b.models import load_policy, load_tokenizer
    from b2b.rollout import completion_mask, encode_prompts, sample_completions

    device = default_device()
    tok = load_tokenizer(profile.policy)
    policy = load_policy(profile.policy, device, dtype=torch.float32)
    prompts = rl_prompts(profile)[0][:batch_size]
    ids, mask = encode_prompts(tok, prompts, device)
    gen = torch.Generator(device).manual_seed(seed)
    torch.manual_seed(seed)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def ours():
        ro = sample_completions(policy, tok, prompts, max_new_tokens, 1.0, gen)
        return int(ro.completion_mask.sum())

    @torch.no_grad()
    def theirs():
        out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              repetition_penalty=1.0, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
        return int(completion_mask(out[:, ids.shape[1]:], tok.eos_token_id).sum())

    rates, lengths = {"b2b": [], "hf": []}, {"b2b": [], "hf": []}
    for turn in range(rounds + 1):
        for name, fn in (("b2b", ours), ("hf", theirs)):
            sync()
            t0 = time.perf_counter()
            n = fn()
            sync()
            if turn:  # turn 0 warms both up
                rates[name].append(n / (time.perf_counter() - t0))
                lengths[name].append(n / batch_size)
    res = {"profile": profile.name, "policy": str(profile.policy), "device": _device_name(device),
           "batch_size": batch_size, "max_new_tokens": max_new_tokens, "rounds": rounds,
           "b2b_tokens_per_s": statistics.median(rates["b2b"]), "hf_tokens_per_s": statistics.median(rates["hf"]),
           "b2b_mean_length": statistics.fmean(lengths["b2b"]), "hf_mean_length": statistics.fmean(lengths["hf"])}
    res["ratio"] = res["b2b_tokens_per_s"] / res["hf_tokens_per_s"]
    return res


def reference_kl_floor(profile, n_prompts: int = 8, max_new_tokens: int = 48, seed: int = 0) -> dict:
    """What a half-precision reference costs the KL: completions sampled from the fp32 policy, their
    log-probs under the policy and under the same weights in bf16 and fp16 (`pick_dtype`'s choices on
    a GPU), and the k1 KL per answer, sum_t (log pi - log pi_ref), that they give at step 0, where
    the true KL is exactly 0. Returns per dtype the mean |k1| per answer, the mean k1 (its bias) and
    the mean |log-prob difference| per token. Prompts: the profile's held-out prompts, then training ones."""
    from b2b.data import rl_prompts
    from b2b.models import load_policy, load_tokenizer
    from b2b.rollout import rollout_logprobs, sample_completions

    tok = load_tokenizer(profile.policy)
    policy = load_policy(profile.policy, "cpu", dtype=torch.float32)
    train, heldout, _ = rl_prompts(profile)
    prompts = (list(heldout) + [p for p in train if p not in heldout])[:n_prompts]
    ro = sample_completions(policy, tok, prompts, max_new_tokens, 1.0, torch.Generator().manual_seed(seed))
    mask = ro.completion_mask
    res = {"profile": profile.name, "policy": str(profile.policy), "prompts": len(prompts),
           "max_new_tokens": max_new_tokens, "mean_length": mask.sum().item() / len(prompts), "dtypes": {}}
    with torch.no_grad():
        logp = rollout_logprobs(policy, ro)
        for dtype in (torch.bfloat16, torch.float16):
            half = copy.deepcopy(policy).to(dtype)  # a copy: a round trip through bf16 would change the policy
            diff = (logp - rollout_logprobs(half, ro).float()) * mask
            del half
            k1 = diff.sum(1)
            res["dtypes"][str(dtype).removeprefix("torch.")] = {
                "mean_abs_k1_per_answer": k1.abs().mean().item(), "mean_k1_per_answer": k1.mean().item(),
                "mean_abs_logp_diff_per_token": (diff.abs().sum() / mask.sum()).item()}
    return res


# ----------------------------------------------------------------------------- the reward model's training step

def reward_training_bench(profile, batch_size: int | None = None, steps: int = 20, warmup: int = 3,
                          level: int = 1, seed: int = 0) -> dict:
    """Time the reward model's training step (`b2b bench --reward-model`): a fresh score head on the
    profile's backbone, `warmup + steps` steps of `train_reward_model`'s own batching and update
    (`accumulated_pair_loss`, gradient clipping, AdamW) on the profile's training pairs, at its
    recipe's batch size unless `batch_size` is given.

    Returns medians over the measured steps: `step_s` and its split `forward_backward_s` /
    `optimizer_s`; per step the `real_tokens` and `padded_tokens` (each batch's chosen and
    rejected sequences left-padded together to the longest) and `gflop` (6 x block parameters x
    padded tokens: forward and backward of every matrix product); `gflops` at the measured step
    time and `floor_s`, the real tokens' matrix products at this machine's measured rate
    (`machine_limits`): no step doing the same fp32 work is faster; `pairs_per_s`."""
    from b2b.config import default_device
    from b2b.data import epoch_batches, preference_splits
    from b2b.models import checkpointing, load_reward_model, load_tokenizer
    from b2b.recipes import reward_config
    from b2b.reward import accumulated_pair_loss, encode_pairs

    device = default_device()
    cfg = reward_config(profile, level, seed=seed)
    batch_size = batch_size or cfg.batch_size
    train, _ = preference_splits(profile, say=lambda _: None)
    train = train[: batch_size * (steps + warmup) * 4]  # enough pairs for length-sorted batches of the run
    tok = load_tokenizer(profile.reward_backbone)
    chosen, rejected = encode_pairs(tok, train, cfg.max_length)
    torch.manual_seed(seed)
    rm = load_reward_model(profile.reward_backbone, num_labels=cfg.num_labels, pad_token_id=tok.pad_token_id,
                           device=device)
    rm.train()
    if cfg.gradient_checkpointing:
        checkpointing(rm)
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = epoch_batches([max(len(c), len(r)) for c, r in zip(chosen, rejected)], batch_size,
                            torch.Generator().manual_seed(seed))
    rows = []
    for idx in (batches * (1 + (steps + warmup) // max(1, len(batches))))[: steps + warmup]:
        c, r = [chosen[i] for i in idx], [rejected[i] for i in idx]
        t0 = _now(device)
        opt.zero_grad(set_to_none=True)
        accumulated_pair_loss(rm, c, r, tok.pad_token_id, device, cfg.micro_batch_size)
        t1 = _now(device)
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        t2 = _now(device)
        mb = cfg.micro_batch_size or len(idx)
        padded = sum(2 * len(c[s:s + mb]) * max(map(len, c[s:s + mb] + r[s:s + mb])) for s in range(0, len(c), mb))
        rows.append({"forward_backward_s": t1 - t0, "optimizer_s": t2 - t1, "step_s": t2 - t0,
                     "real_tokens": sum(map(len, c + r)), "padded_tokens": padded})
    rows = rows[warmup:]
    shape = model_shape(rm.config)
    limits = machine_limits(shape["hidden"], shape["intermediate"], device)
    res = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    per_token = 6 * shape["block_params"] * (4 / 3 if cfg.gradient_checkpointing else 1)
    res.update(profile=profile.name, device=_device_name(device), torch=torch.__version__,
               threads=torch.get_num_threads(), level=level, batch_size=batch_size, steps=steps, warmup=warmup,
               gflop=round(per_token * res["padded_tokens"] / 1e9, 3), limits=limits)
    res["gflops"] = round(res["gflop"] / res["step_s"], 1)
    res["floor_s"] = round(per_token * res["real_tokens"] / (limits["matmul_gflops"] * 1e9), 4)
    res["pairs_per_s"] = round(batch_size / res["step_s"], 1)
    return res

