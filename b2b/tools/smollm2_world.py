"""The real model in the tiny world: SmolLM2-135M-Instruct fine-tuned on the tiny world's
demonstrations (the `tiny-smollm2` profile), scored by the shipped Level 1 reward model through its
own tokenizer, trained by vanilla REINFORCE (two seeds) and RLOO k=4 + KL, every held-out answer
rated by the gold judge. The claims below were fixed before the runs (docs/real-model.md).

    python -m b2b.tools.smollm2_world --train    # the reward probe and the runs (about 25 minutes a run on 2 cores)
    python -m b2b.tools.smollm2_world            # the figures and claims from the shipped records (seconds)

The runs live in `notebooks/runs/smollm2-tiny/<name>` and ship as records in
`data/runs/smollm2-tiny/` (logs and evaluations, no weights); `history(name)` reads one back
without loading any model, so notebook 04 shows them in every profile.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RUNS = {"reinforce-seed0": ("reinforce", 0), "reinforce-seed1": ("reinforce", 1), "rloo-k-4-kl-seed0": ("rloo", 0)}
"""name -> (algorithm, seed): the runs on the real model, each at `rl_config(tiny-smollm2, algo, seed=seed)`."""

ROOT = Path("notebooks") / "runs" / "smollm2-tiny"
"""Where `--train` writes the runs (below a folder called `runs`: the record key is `smollm2-tiny/<name>`)."""

PROBE = "reward-probe"
"""The cached result (`b2b.runs.cached_result`) of the reward models measured on SmolLM2's answers."""

FALL = 1.0
"""Claim 1's fall: vanilla REINFORCE's held-out gold ends at least this far below its peak."""


def configs(profile=None) -> dict:
    """name -> the RLConfig of each run in `RUNS` (the `tiny-smollm2` profile's recipe)."""
    import dataclasses

    from b2b.config import Profile
    from b2b.recipes import rl_config

    profile = profile or _profile_stub()
    assert isinstance(profile, Profile)
    return {name: dataclasses.replace(rl_config(profile, algo), seed=seed) for name, (algo, seed) in RUNS.items()}


def _profile_stub():
    """The `tiny-smollm2` profile's settings without its policy folder (reading records needs no model)."""
    from b2b.config import smollm2_world

    return smollm2_world("tiny-smollm2", policy="smollm2-135m-tiny-sft")


def history(name: str, root: str | Path = ROOT):
    """The `History` of run `name`, read from `root/name` (filled from its shipped record first when
    it holds no run); no model is loaded. A one-line error when neither holds the finished run."""
    from b2b.errors import ConfigError
    from b2b.runs import logged_history, restore_record

    out = Path(root) / name
    restore_record(out)
    cfg = configs()[name]
    h = logged_history(out).first(cfg.steps)
    if [r["step"] for r in h.steps] != list(range(1, cfg.steps + 1)):
        raise ConfigError(f"{out}: no finished run of {name} ({cfg.steps} steps) there or in data/runs/smollm2-tiny; "
                          "python -m b2b.tools.smollm2_world --train trains it")
    return h


def recorded(name: str, root: str | Path = ROOT) -> dict:
    """The run's config.json (its settings, policy and profile)."""
    history(name, root)
    return json.loads((Path(root) / name / "config.json").read_text())


def claims(histories: dict) -> list[dict]:
    """The pre-registered claims (docs/real-model.md), checked on the held-out evaluations of each run:

    1. vanilla REINFORCE (each seed): gold peaks and then falls, the last evaluation at least
       `FALL` below the peak, while the proxy at the last evaluation is above the proxy at the peak's;
    2. RLOO k=4 + KL: the last evaluation's gold is above the SFT policy's (step 0) and no more
       than `FALL` below its own peak.
    One row per run and claim: the figures and whether the claim held."""
    rows = []
    for name, h in histories.items():
        ev = h.evals
        sft, last = ev[0], ev[-1]
        peak = max(ev, key=lambda e: e["gold_mean"])
        row = {"run": name, "sft_gold": sft["gold_mean"], "peak_gold": peak["gold_mean"], "peak_step": peak["step"],
               "final_gold": last["gold_mean"], "sft_proxy": sft["proxy_mean"], "proxy_at_peak": peak["proxy_mean"],
               "final_proxy": last["proxy_mean"], "final_kl": last.get("kl_ref"),
               "sft_distinct_2": sft["distinct_2"], "final_distinct_2": last["distinct_2"]}
        if name.startswith("reinforce"):
            row["claim"] = f"gold peaks, then falls by at least {FALL:g} while the proxy ends above its value at gold's peak"
            row["held"] = (peak["gold_mean"] - last["gold_mean"] >= FALL and peak["step"] < last["step"]
                           and last["proxy_mean"] > peak["proxy_mean"])
        else:
            row["claim"] = f"gains gold over SFT and ends within {FALL:g} of its peak"
            row["held"] = last["gold_mean"] > sft["gold_mean"] and peak["gold_mean"] - last["gold_mean"] < FALL
        rows.append(row)
    return rows


LABELS = {"reinforce-seed0": "vanilla REINFORCE, seed 0", "reinforce-seed1": "vanilla REINFORCE, seed 1",
          "rloo-k-4-kl-seed0": "RLOO k=4 + KL, seed 0"}


def table_rows(histories: dict, tiny: dict | None = None) -> list[dict]:
    """One row per run (held-out evaluations: the SFT policy's at step 0, the peak's, the last's, and
    the first evaluation `b2b.evaluate.collapse_flags` flags): the other runs first (`tiny`: {label: (History, rollouts per step)}), then this
    module's (`histories`: {name: History})."""
    from b2b.evaluate import collapse_flags

    cfgs = configs()
    smol = {LABELS[n]: (h, cfgs[n].batch_size) for n, h in histories.items()}
    rows = []
    for model, runs in (("tiny policy (1.1M)", tiny or {}), ("SmolLM2-135M", smol)):
        for label, (h, batch) in runs.items():
            ev, peak = h.evals, h.peak_gold or {}
            flags = collapse_flags([e["proxy_mean"] for e in ev], [e["distinct_2"] for e in ev], keep=0.5).tolist()
            flagged = [e["step"] for e, f in zip(ev, flags) if f]
            rows.append({"model": model, "run": label, "steps x rollouts": f"{len(h.steps)} x {batch}",
                         "gold: SFT": ev[0].get("gold_mean"), "gold: peak (step)":
                             f"{peak['gold_mean']:.2f} ({peak['step']})" if peak else None,
                         "gold: final": ev[-1].get("gold_mean"),
                         "proxy: SFT": ev[0]["proxy_mean"], "proxy: final": ev[-1]["proxy_mean"],
                         "KL to SFT: final (nats per answer)": ev[-1].get("kl_ref"),
                         "distinct-2: final / SFT's": ev[-1]["distinct_2"] / ev[0]["distinct_2"],
                         "first flagged (detector)": flagged[0] if flagged else None})
    return rows


def sample_rows(histories: dict, n: int = 3) -> list[dict]:
    """For each run, `n` held-out prompts with the SFT policy's answer (step 0) and the last
    evaluation's, each with its gold rating."""
    rows = []
    for name, h in histories.items():
        first, last = h.evals[0]["samples"], h.evals[-1]["samples"]
        for a, b in list(zip(first, last))[:n]:
            rows.append({"run": LABELS.get(name, name), "prompt": a["prompt"], "SFT answer": a["response"],
                         "gold (SFT)": a.get("gold"), f"after {h.evals[-1]['step']} steps": b["response"],
                         "gold (after)": b.get("gold")})
    return rows


def step_seconds(h) -> float:
    """The median seconds of a run's steps (sampling, scoring and learning; evaluations apart)."""
    return statistics.median(r["time/step_s"] for r in h.steps)


def reward_probe(profile, n: int = 256, retrain: bool = False, root: str | Path = ROOT) -> dict:
    """The shipped reward models on the SFT SmolLM2's own answers: two answers per held-out prompt
    (temperature 1), each level's pair accuracy on the pairs gold ranks apart, its Spearman with
    gold, and its correlation with length (`b2b.reward_eval.gold_metrics`), beside the same
    measure on the tiny SFT policy's answers. Cached in `root/reward-probe` (and its record)."""
    from b2b.data import heldout_prompts
    from b2b.models import load_policy, load_reward_model, load_tokenizer
    from b2b.reward import retokenized, score_responses
    from b2b.reward_eval import gold_metrics, gold_probe
    from b2b.reward_models import shipped_reward_model
    from b2b.runs import cached_result
    from b2b.config import get_profile

    prompts = heldout_prompts(profile, n)
    tiny = get_profile("tiny")

    def compute() -> dict:
        out = {}
        for label, prof in (("smollm2", profile), ("tiny", tiny)):
            policy, ptok = load_policy(prof.policy), load_tokenizer(prof.policy)
            rows = None
            for level in (1, 2):  # one set of answers, scored by each level through its own tokenizer
                home = shipped_reward_model(tiny, level)
                rm, rtok = load_reward_model(home), load_tokenizer(home)
                if rows is None:
                    rows = gold_probe(retokenized(rm, rtok, ptok), policy, ptok, prompts, 2, profile.max_new_tokens,
                                      seed=0)
                reward = score_responses(rm, rtok, [r["prompt"] for r in rows], [r["response"] for r in rows],
                                         finished=[r["finished"] for r in rows]).tolist()
                m = gold_metrics([{**r, "reward": x} for r, x in zip(rows, reward)])
                out[f"{label}/level{level}"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
            gold = [r["gold"] for r in rows]
            out[f"{label}/answers"] = {"n": len(rows), "gold_mean": round(statistics.fmean(gold), 4),
                                       "eos_rate": round(statistics.fmean(r["finished"] for r in rows), 4),
                                       "examples": [{k: r[k] for k in ("prompt", "response", "gold")} for r in rows[:6]]}
        return out

    key = {"prompts": n, "max_new_tokens": profile.max_new_tokens, "policy": Path(profile.policy).name}
    return cached_result(Path(root) / PROBE, key, compute, retrain)


SFT_FILE = "sft.json"
"""The record of the profile's fine-tune (`b2b.sft.SFT_RECORD` without its samples) in data/runs/smollm2-tiny/."""

START, END = "<!-- smollm2-world:start -->", "<!-- smollm2-world:end -->"


def sft_record() -> dict:
    """The shipped record of the `tiny-smollm2` policy's fine-tune (settings, loss, seconds, before, after)."""
    from b2b.runs import record_dir

    return json.loads((record_dir(ROOT.name) / SFT_FILE).read_text())


def ship_sft_record(policy_dir: str | Path) -> Path:
    """Copy a fine-tuned policy's `b2b_sft.json` (samples left out) into the shipped records."""
    from b2b.runs import record_dir
    from b2b.sft import SFT_RECORD

    rec = json.loads((Path(policy_dir) / SFT_RECORD).read_text())
    for k in ("before", "after"):
        rec.get(k, {}).pop("samples", None)
    dest = record_dir(ROOT.name) / SFT_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(rec) + "\n")
    return dest


def shipped_probe() -> dict:
    """The shipped reward probe (`reward_probe`'s result), read without any model."""
    from b2b.runs import record_dir

    return json.loads((record_dir(f"{ROOT.name}/{PROBE}") / "result.json").read_text())["result"]


def _f(x, fmt=".2f"):
    return "n/a" if x is None else f"{x:{fmt}}"


def readme_section(histories: dict, sft: dict, probe: dict) -> str:
    """The README's section on the real model, every figure from the shipped records."""
    c, b, a = sft["config"], sft["before"], sft["after"]
    lines = [START, "", "**The real model, with a gold judge.** SmolLM2-135M-Instruct in the tiny world (the "
             "`tiny-smollm2` profile: fine-tuned on the tiny world's demonstrations, scored by the shipped Level 1 "
             "reward model through its own tokenizer, every held-out answer rated by the gold judge; "
             "[docs/real-model.md](docs/real-model.md)):", "",
             f"- **SFT** (`b2b sft --steps {c['steps']} --batch-size {c['batch_size']} --lr {c['lr']:g} --eval-prompts "
             f"{a['n']}`, {sft['seconds']:.0f} s on 2 cores): held-out gold {b['gold_mean']:.2f} -> {a['gold_mean']:.2f} "
             f"at temperature 1, end of turn {b['eos_rate']:.0%} -> {a['eos_rate']:.0%}, distinct-2 "
             f"{b['distinct_2']:.2f} -> {a['distinct_2']:.2f}, length {b['mean_length']:.1f} -> {a['mean_length']:.1f} "
             f"tokens ({a['n']} prompts, answers up to {a['max_new_tokens']} tokens).",
             f"- **The reward model on SmolLM2's answers** (two per held-out prompt, {probe['smollm2/answers']['n']} "
             f"in all): Level 1 orders the pairs gold ranks apart as gold does "
             f"{probe['smollm2/level1']['gold_accuracy']:.0%} of the time, Spearman with gold "
             f"{probe['smollm2/level1']['gold_spearman']:.2f} (on the tiny policy's answers: "
             f"{probe['tiny/level1']['gold_accuracy']:.0%}, {probe['tiny/level1']['gold_spearman']:.2f}); Level 2: "
             f"{probe['smollm2/level2']['gold_accuracy']:.0%}, {probe['smollm2/level2']['gold_spearman']:.2f}.", "",
             "| run | steps x rollouts | gold: SFT | gold: peak (step) | gold: final | proxy: SFT -> final | "
             "KL to SFT (nats) | distinct-2 / SFT | step (s) | claim held |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    cfgs = configs()
    claim = {r["run"]: r for r in claims(histories)}
    for name, h in histories.items():
        r = claim[name]
        lines.append(f"| {LABELS[name]} | {len(h.steps)} x {cfgs[name].batch_size} | {r['sft_gold']:.2f} | "
                     f"{r['peak_gold']:.2f} ({r['peak_step']}) | {r['final_gold']:.2f} | {r['sft_proxy']:.2f} -> "
                     f"{r['final_proxy']:.2f} | {_f(r['final_kl'], '.1f')} | "
                     f"{r['final_distinct_2'] / r['sft_distinct_2']:.2f} | {step_seconds(h):.1f} | "
                     f"{'yes' if r['held'] else 'no'} |")
    held = sum(r["held"] for r in claim.values())
    lines += ["", f"The claims, fixed before the runs: vanilla REINFORCE's gold peaks and then falls by at least {FALL:g} "
              "while its proxy ends above its value at gold's peak (each seed); RLOO k=4 + KL gains gold over SFT "
              "and ends within "
              f"{FALL:g} of its peak. {held} of {len(claim)} held. {rloo_reading(claim, histories)}", "",
              "\"gold: SFT\" is each run's own evaluation at step 0 (64 held-out prompts every 10 steps, sampled with "
              "the run's seed + 1), so it differs from the 128-prompt figure above and between seeds; step time is "
              "the median on a 2-core machine (sampling, scoring, learning). `python -m b2b.tools.smollm2_world` prints "
              "these from the shipped records; `--train` reruns them (about 25 minutes a run on 2 cores).", "", END]
    return "\n".join(lines)


def rloo_reading(claim: dict, histories: dict) -> str:
    """What RLOO + KL's figures say beside its claim: by how much it held or failed, and how far it
    moved from SFT against vanilla REINFORCE."""
    r = claim.get("rloo-k-4-kl-seed0")
    vanilla = [c for n, c in claim.items() if n.startswith("reinforce")]
    if r is None or not vanilla:
        return ""
    fall = r["peak_gold"] - r["final_gold"]
    kls = [c["final_kl"] for c in vanilla]
    text = (f"RLOO + KL's gold ended {fall:.2f} below its peak (the bound: {FALL:g}), "
            f"{r['final_gold'] - r['sft_gold']:+.2f} against SFT, {r['final_kl']:.1f} nats from SFT "
            f"(vanilla: {min(kls):.1f} to {max(kls):.1f}), with {r['final_distinct_2'] / r['sft_distinct_2']:.0%} "
            "of SFT's distinct-2.")
    if r["final_proxy"] > r["proxy_at_peak"] and fall > FALL / 2:
        text += (" Its proxy kept rising after gold's peak too: on SmolLM2 at this learning rate the KL penalty of the "
                 "tiny policy's recipe slowed the reward hacking, it did not stop it.")
    return text


def replace_section(text: str, body: str) -> str:
    """`text` with the part between START and END (markers included) replaced by `body`."""
    i, j = text.index(START), text.index(END) + len(END)
    return text[:i] + body + text[j:]


def train_all(root: str | Path = ROOT, names=None, progress: bool = True) -> None:
    """Train each run of `RUNS` (or `names`) that `root` does not hold yet, in the `tiny-smollm2`
    profile (a killed run continues from its last checkpoint)."""
    from b2b.config import get_profile
    from b2b.data import rl_prompts
    from b2b.reward_models import course_reward_model
    from b2b.tools.showdown import cached_run

    profile = get_profile("tiny-smollm2")
    rm = course_reward_model(profile, level=1)
    data = rl_prompts(profile)
    for name, cfg in configs(profile).items():
        if names and name not in names:
            continue
        cached_run(profile, cfg, Path(root) / name, reward_model=rm, data=data, progress=progress)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m b2b.tools.smollm2_world", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", action="store_true", help="train the runs root does not hold, then pack their records")
    ap.add_argument("--only", nargs="*", default=None, help="train only these runs (names of RUNS)")
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--write", action="store_true", help="rewrite the README's section from the shipped records")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README's section differs from the records")
    args = ap.parse_args(argv)
    if args.train:
        from b2b.config import get_profile, smollm2_tiny_dir
        from b2b.tools.records import pack

        profile = get_profile("tiny-smollm2")
        ship_sft_record(smollm2_tiny_dir())
        print(json.dumps(reward_probe(profile, root=args.root)))
        train_all(args.root, args.only)
        pack([Path(args.root) / PROBE] + [Path(args.root) / n for n in RUNS if (Path(args.root) / n).exists()])
    hs = {}
    for name in RUNS:
        try:
            hs[name] = history(name, args.root)
        except Exception as e:  # noqa: BLE001 (a run not trained yet: say so and go on)
            print(f"{name}: {e}")
    for row in claims(hs):
        print(json.dumps({**row, "step_s": round(step_seconds(hs[row["run"]]), 2)}))
    if args.write or args.check:
        readme = Path(__file__).resolve().parents[2] / "README.md"
        body = readme_section(hs, sft_record(), shipped_probe())
        if args.check:
            return 0 if body in readme.read_text() else 1
        readme.write_text(replace_section(readme.read_text(), body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
