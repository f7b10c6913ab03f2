"""Mutation testing of the lesson core: the estimators, the reward losses, the algorithms' records and the step.

    python tests/mutation.py            # about 6 minutes on 2 cores; exits 1 on an unexplained survivor
    python tests/mutation.py --list     # the functions it mutates

mutmut (PyPI) copies the package into mutants/, plants one small change at a time in the functions
below (an operator, a constant, an argument, a dropped call) and runs the fast tests that reach that
function (pyproject.toml's [tool.mutmut] names them). A mutant the tests do not notice *survives*.
A survivor is either a test that is missing, or a change that cannot alter any result (an
*equivalent* mutant); each of the latter is listed in EQUIVALENT below, by its function and the
line it produces, with the reason. Anything else that survives fails this command.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {
    "b2b.advantages": ["moving_average_baseline", "reinforce_loss", "repeated_ngram_fraction", "shaped_reward",
                       "kl_per_token", "kl_shaped_reward", "rloo_advantages", "group_mean_baseline",
                       "token_level_rewards", "returns_to_go", "masked_whiten", "clipped_pg_loss", "masked_mean"],
    "b2b.reward": ["bradley_terry_loss", "ordinal_loss", "pair_loss", "expected_class", "prob_at_least",
                   "scalar_reward", "win_probability"],
    "b2b.algorithms": ["kl_in_reward", "reinforce_advantages", "reinforce_loss", "rloo_advantages",
                       "reinforce_pp_advantages", "clipped_loss", "reinforce_pp_baseline_advantages",
                       "clipped_loss_k2", "grpo_advantages", "grpo_loss", "dr_grpo_advantages", "dr_grpo_loss"],
    "b2b.step": ["learn"],
}

# (function, a fragment of the mutated line): why no test can tell the mutant from the original.
# "Shape" reasons hold for the inputs each function documents: (B, K) scores and logits, (B, K, K)
# joint tables; "device" reasons hold wherever inputs live on one device, as they do in b2b.
EQUIVALENT: dict[tuple[str, str], str] = {
    ("ordinal_loss", "dim=+1"): "log_softmax over dim 1 of (B, K) logits is dim -1",
    ("ordinal_loss", "joint.shape[+1]"): "joint is (B, K, K): dims 1, -2 and -1 all have size K",
    ("ordinal_loss", "joint.shape[-2]"): "joint is (B, K, K): dims 1, -2 and -1 all have size K",
    ("ordinal_loss", "device=None"): "the mask is built on the default device; the inputs' device only differs on a GPU",
    ("ordinal_loss", "dtype=torch.bool, )"): "the mask is built on the default device; the inputs' device only differs on a GPU",
    ("ordinal_loss", '"-INF"'): 'float("-INF") is float("-inf"): Python reads the name in any case',
    ("pair_loss", "shape[+1]"): "scores are (B, K): shape[1] is shape[-1]",
    ("pair_loss", "squeeze(+1)"): "scores are (B, 1): squeeze(1) is squeeze(-1)",
    ("expected_class", "dtype=None"): "integer classes times float32 probabilities promote to float32: same numbers",
    ("expected_class", "+ 1, device=logits.device)"): "integer classes times float32 probabilities promote to float32: same numbers",
    ("expected_class", "device=None"): "the class numbers are built on the default device; the inputs' only differs on a GPU",
    ("expected_class", "dtype=torch.float32, )"): "the class numbers are built on the default device; the inputs' only differs on a GPU",
    ("prob_at_least", "softmax(+1)"): "logits are (B, K) (the [:, k - 1:] slice needs two dims): dim 1 is dim -1",
    ("prob_at_least", "sum(+1)"): "logits are (B, K): dim 1 is dim -1",
    ("scalar_reward", "shape[+1]"): "scores are (B, K): shape[1] is shape[-1]",
    ("scalar_reward", "squeeze(+1)"): "scores are (B, 1): squeeze(1) is squeeze(-1)",
    ("win_probability", "shape[+1]"): "scores are (B, K): shape[1] is shape[-1]",
    ("win_probability", "squeeze(+1)"): "scores are (B, 1): squeeze(1) is squeeze(-1)",
    ("win_probability", "softmax(+1)"): "scores are (B, K): dim 1 is dim -1",
    ("win_probability", "dim2=2).sum(+1)"): "the diagonal of (B, K, K) is (B, K): dim 1 is dim -1",
    ("repeated_ngram_fraction", "total.clamp(min=2)"): "a row with at most one n-gram has no repeat: 0 / 1 and 0 / 2 are both 0",
    ("repeated_ngram_fraction", "device=None)"): "the zeros are made on the default device; the inputs' device only differs on a GPU",
    ("repeated_ngram_fraction", "torch.zeros(B, )"): "the zeros are made on the default device; the inputs' device only differs on a GPU",
    ("repeated_ngram_fraction", "torch.full_like(h, -2)"): "any negative marker works: hashes are >= 0 and only those count",
    ("repeated_ngram_fraction", "dtype=torch.long, device=None)"): "the hashes are made on the default device; the inputs' only differs on a GPU",
    ("repeated_ngram_fraction", "dtype=torch.long, )"): "the hashes are made on the default device; the inputs' only differs on a GPU",
    ("token_level_rewards", "& (mask >= 0)"): "the padding after the last token that this lets in is multiplied by the mask on return",
    ("clipped_loss_k2", "advantages, None, mask, cfg)"): "the clipped surrogate does not read the reference log-probs (only the k2 term does)",
    ("dr_grpo_advantages", "scale=None)"): "scale is only tested for truth: None and False both leave the standard deviation out",
    ("reinforce_pp_baseline_advantages", "no_kl, mask, 1.0)"): "the baseline variant's KL tensor is all zeros: any beta times zero is zero",
}

def patterns() -> list[str]:
    return [f"{mod}.x_{fn}__mutmut_*" for mod, fns in TARGETS.items() for fn in fns]


def mutant_diff(name: str) -> str:
    return subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=ROOT, capture_output=True,
                          text=True).stdout


def added_lines(diff: str) -> list[str]:
    return [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]


def explain(name: str, diff: str) -> str | None:
    fn = re.sub(r"__mutmut_\d+$", "", name.split(".x_", 1)[1])
    for (f, fragment), why in EQUIVALENT.items():
        if f == fn and any(fragment in line for line in added_lines(diff)):
            return why
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the mutated functions and exit")
    ap.add_argument("--keep", action="store_true", help="reuse mutants/ from an earlier run (mutmut's cache)")
    args = ap.parse_args()
    if args.list:
        print("\n".join(patterns()))
        return 0
    if not args.keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    t0 = time.time()
    # pytest's third-party plugins (nbval pulls in Jupyter) are not needed to test a mutant and cost
    # seconds a run; mutmut's own plugin is passed to pytest directly
    # mutmut runs one mutant per core: one torch thread each, or two runs would fight over two cores
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", *patterns()], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    (ROOT / "mutants" / "mutmut-run.log").write_text(run.stdout[-20000:] + run.stderr[-20000:])
    if run.returncode not in (0, 1):
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        return 2
    res = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    status = {}
    for line in res.splitlines():
        m = re.match(r"\s*(\S+__mutmut_\d+): (.+)", line)
        if m and any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), m.group(1)) for p in patterns()):
            status[m.group(1)] = m.group(2).strip()
    detected = ("killed", "timeout")  # a mutant that makes a test run forever is caught too
    killed = sum(s in detected for s in status.values())
    survivors = [n for n, s in status.items() if s not in detected]
    unexplained, equivalent = [], []
    for name in survivors:
        diff = mutant_diff(name)
        why = explain(name, diff)
        (equivalent if why else unexplained).append((name, status[name], why, added_lines(diff)))
    total = len(status)
    print(f"mutants: {total}, killed {killed}, equivalent {len(equivalent)}, unexplained {len(unexplained)} "
          f"({time.time() - t0:.0f} s)")
    if total:
        print(f"score (killed / non-equivalent): {killed}/{total - len(equivalent)} = "
              f"{killed / max(1, total - len(equivalent)):.1%}")
    for name, st, why, lines in equivalent:
        print(f"  equivalent {name}: {' | '.join(lines)}\n      {why}")
    for name, st, _, lines in unexplained:
        print(f"  SURVIVED ({st}) {name}: {' | '.join(lines)}")
    used = {(fn, f) for n, _, _, lines in equivalent for (fn, f) in EQUIVALENT
            if fn == re.sub(r"__mutmut_\d+$", "", n.split(".x_", 1)[1]) and any(f in line for line in lines)}
    for key in EQUIVALENT:
        if key not in used:
            print(f"  note: no mutant matches the equivalence entry {key}; remove it")
    (ROOT / "mutants" / "b2b_mutation.json").write_text(json.dumps(
        {"total": total, "killed": killed, "equivalent": [e[0] for e in equivalent],
         "unexplained": [u[0] for u in unexplained]}, indent=1))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
