"""Past one GPU: the course's RLOO (or REINFORCE++-baseline) through TRL and accelerate (`b2b scale-out`).

    b2b scale-out --algo rloo --num-processes 8 --profile colab --out runs/scale-out   # 8 GPUs
    b2b scale-out --algo rloo --num-processes 2 --cpu --profile ci --steps 2          # 2 CPU processes

`b2b scale-out` runs `accelerate launch --multi_gpu --num_processes N -m b2b.tools.scale_out ...`
(add `--config-file` for an accelerate config with DeepSpeed ZeRO or FSDP). Every process loads the
profile's policy, b2b's reward model (`b2b.reward_models.course_reward_dir`: the shipped one, or the
one notebook 01 trained) and prompts, and hands them to TRL's trainer with b2b's
settings (`b2b.tools.trl_bridge.trl_args`); TRL and accelerate split each batch of rollouts over the
processes, all-reduce the gradients and keep the replicas in step. b2b adds no distribution code.

What changes on real GPUs, none of it in b2b: an accelerate config file for DeepSpeed ZeRO-2/3 or FSDP
(`accelerate config`, then `--config-file`), which shards the optimizer state and weights once the
policy outgrows one GPU; and vLLM for generation (`trl_args` then takes `use_vllm=True`,
`vllm_mode="colocate"`; `pip install vllm`), which is where TRL's time goes at scale.

The last stdout line of the main process is one JSON object (`--json` keys): algo, trainer,
processes, steps, step_s (median seconds per step), reward (TRL's mean reward per logged step), out.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from b2b.errors import ConfigError


def free_port() -> int:
    """A TCP port nobody listens on now: the processes' rendezvous (accelerate's default, 29500, may be taken)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(args: list[str], num_processes: int, cpu: bool, config_file: str | None = None,
                   port: int | None = None) -> list[str]:
    """The `accelerate launch` command line that runs this module in `num_processes` processes."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no"]
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    if config_file:
        cmd += ["--config_file", config_file]
    if num_processes > 1 and not config_file:
        cmd += ["--multi_gpu"]  # torch.distributed's launcher; on a CPU-only run the processes use gloo
    cmd += ["--num_processes", str(num_processes), "-m", "b2b.tools.scale_out", *args]
    if cpu:
        cmd += ["--cpu"]
    return cmd


def reward_model_for_scale_out(profile, level: int = 1):
    """The course's reward model of `profile`, already trained (every process loads the same one; a
    reward model is never trained inside a distributed run); else a one-line error saying how."""
    from b2b.models import load_reward_model
    from b2b.reward_models import course_reward_dir

    home = course_reward_dir(profile, level)
    if not (home / "config.json").exists():
        raise ConfigError(f"scale-out: no level-{level} reward model for profile {profile.name} in {home}: train it "
                          f"there first (notebook 0{level} does, as does b2b.reward_models.course_reward_model(profile))")
    return load_reward_model(home, device="cpu")


def run(argv=None) -> dict:
    """One process of the launched run (the module's entry point under accelerate)."""
    import argparse

    from b2b.config import get_profile
    from b2b.data import rl_prompts
    from b2b.recipes import rl_config
    from b2b.tools.trl_bridge import TRL_TRAINERS, trl_train

    ap = argparse.ArgumentParser(prog="python -m b2b.tools.scale_out")
    ap.add_argument("--algo", default="rloo", choices=list(TRL_TRAINERS))
    ap.add_argument("--profile", default=None)
    ap.add_argument("--policy", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--level", type=int, default=1, choices=(1, 2))
    ap.add_argument("--out", default=None)
    ap.add_argument("--cpu", action="store_true")
    a = ap.parse_args(argv)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    profile = get_profile(a.profile, policy=a.policy)
    over = {k: v for k, v in (("steps", a.steps), ("batch_size", a.batch_size), ("max_new_tokens", a.max_new_tokens))
            if v is not None}
    cfg = rl_config(profile, a.algo, **over).validate()
    prompts, _, _ = rl_prompts(profile)
    rm = reward_model_for_scale_out(profile, a.level)
    if not a.cpu:
        import torch

        if torch.cuda.is_available():
            rm = rm.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    res = trl_train(a.algo, profile.policy, rm, prompts, cfg, processes=processes, progress=False, out_dir=a.out,
                    use_cpu=True if a.cpu else None)
    if a.out is not None:
        res["trainer"].save_model(a.out)  # the main process writes; the others wait for it
    rewards = [r["reward"] for r in res["log"] if "reward" in r]
    out = {"algo": a.algo, "trainer": TRL_TRAINERS[a.algo], "processes": processes, "steps": len(res["step_times"]),
           "step_s": statistics.median(res["step_times"]) if res["step_times"] else None, "reward": rewards,
           "out": a.out, "rank": rank}
    if rank == 0:
        print(json.dumps(out), flush=True)
    return out


def launch(algo: str, num_processes: int, cpu: bool, profile: str | None = None, policy: str | None = None,
           steps: int | None = None, batch_size: int | None = None, max_new_tokens: int | None = None,
           out: str | None = None, config_file: str | None = None, timeout: float | None = None) -> dict:
    """Run `accelerate launch` of this module and return the main process's JSON result."""
    args = ["--algo", algo]
    for flag, v in (("--profile", profile), ("--policy", policy), ("--steps", steps), ("--batch-size", batch_size),
                    ("--max-new-tokens", max_new_tokens), ("--out", out)):
        if v is not None:
            args += [flag, str(v)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if cpu:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // num_processes)))
    port = free_port() if num_processes > 1 else None
    p = subprocess.run(launch_command(args, num_processes, cpu, config_file, port), capture_output=True, text=True,
                       env=env, timeout=timeout)
    lines = [ln for ln in p.stdout.strip().splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        errors = [ln for ln in p.stderr.strip().splitlines() if "Error" in ln] or p.stderr.strip().splitlines()
        raise RuntimeError(f"scale-out: accelerate launch exited with {p.returncode}: "
                           f"{(errors or ['(no output)'])[-1]}\n" + "\n".join(p.stderr.strip().splitlines()[-15:]))
    return json.loads(lines[-1])


if __name__ == "__main__":
    run()
