"""Build the shipped tiny-world data files in `data/` (and check them).

    b2b build-data            # write data/*.jsonl
    b2b build-data --check    # exit 1 if the shipped files differ from what this code makes

Files (all JSON Lines, one object a line):
- `prefs_train.jsonl`, `prefs_test.jsonl`: preference pairs in the HelpSteer2-binarized schema:
  `prompt`, `chosen`, `rejected` (chat messages ending with the assistant turn),
  `chosen_rating`, `rejected_rating` (annotator ratings, 1-10). Test pairs use test prompts only.
- `sft.jsonl`: `{"prompt", "completion"}` demonstrations of mixed, mediocre quality.
- `prompts_train.jsonl`, `prompts_test.jsonl`: `{"prompt", "family"}`; RL samples train prompts,
  evaluation uses the first N test prompts (ordered round-robin over families).
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

from b2b.gold import annotator_rating
from b2b.world import FAMILIES, PromptSpec, World, sample_style

N_TRAIN_PAIRS = 20_000
N_TEST_PAIRS = 2_000
N_SFT = 20_000
DATA_FILES = ["prefs_train.jsonl", "prefs_test.jsonl", "sft.jsonl", "prompts_train.jsonl",
              "prompts_test.jsonl"]


def _by_family(specs: list[PromptSpec]) -> dict[str, list[PromptSpec]]:
    return {f: [s for s in specs if s.family == f] for f in FAMILIES}


def _draw_prompt(rng: random.Random, by_family: dict[str, list[PromptSpec]]) -> PromptSpec:
    """Family first (uniform), then a prompt of that family: every family is equally common."""
    return rng.choice(by_family[rng.choice(FAMILIES)])


def messages(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def preference_pair(world: World, spec: PromptSpec, rng: random.Random) -> dict:
    """Two pool responses rated by independent noisy annotators, binarised (ties redrawn)."""
    while True:
        a, b = (world.respond(spec, rng, sample_style(rng, "pool")) for _ in range(2))
        ra, rb = (round(annotator_rating(spec, r, rng), 2) for r in (a, b))
        if ra != rb and a != b:
            break
    (c, rc), (r, rr) = sorted([(a, ra), (b, rb)], key=lambda x: -x[1])
    return {"prompt": spec.text, "chosen": messages(spec.text, c), "rejected": messages(spec.text, r),
            "chosen_rating": rc, "rejected_rating": rr}


def build_rows(world: World | None = None) -> dict[str, list[dict]]:
    """Every data file's rows, deterministic in `world.seed` (cached per seed and size)."""
    return _build_rows((world or World()).seed, N_TRAIN_PAIRS, N_TEST_PAIRS, N_SFT)


@lru_cache(maxsize=2)
def _build_rows(seed: int, n_train: int, n_test: int, n_sft: int) -> dict[str, list[dict]]:
    world = World(seed=seed)
    split = world.split
    train, test = _by_family(split["train"]), _by_family(split["test"])
    rng = random.Random(f"prefs-train-{seed}")
    prefs_train = [preference_pair(world, _draw_prompt(rng, train), rng) for _ in range(n_train)]
    rng = random.Random(f"prefs-test-{seed}")
    prefs_test = [preference_pair(world, _draw_prompt(rng, test), rng) for _ in range(n_test)]
    rng = random.Random(f"sft-{seed}")
    sft = []
    for _ in range(n_sft):
        spec = _draw_prompt(rng, train)
        sft.append({"prompt": spec.text, "completion": world.respond(spec, rng, sample_style(rng, "sft"))})
    return {
        "prefs_train.jsonl": prefs_train,
        "prefs_test.jsonl": prefs_test,
        "sft.jsonl": sft,
        "prompts_train.jsonl": [{"prompt": s.text, "family": s.family} for s in split["train"]],
        "prompts_test.jsonl": [{"prompt": s.text, "family": s.family} for s in split["test"]],
    }


def reference_responses(prompts: list[str], seed: int = 0, world: World | None = None) -> list[str]:
    """The world generator's own SFT-style responses to `prompts` (the diversity reference)."""
    world = world or World()
    rng = random.Random(f"reference-{seed}")
    return [world.respond(world.spec(p), rng, sample_style(rng, "sft")) for p in prompts]


def _dumps(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode("utf-8")


def write_data(out: str | Path = "data", world: World | None = None) -> list[Path]:
    """Write every data file into `out`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in build_rows(world).items():
        (out / name).write_bytes(_dumps(rows))
        paths.append(out / name)
    return paths


def check_data(out: str | Path = "data", world: World | None = None) -> list[str]:
    """Names of the shipped files that are missing or differ from what the code generates."""
    out = Path(out)
    return [name for name, rows in build_rows(world).items()
            if not (out / name).exists() or (out / name).read_bytes() != _dumps(rows)]
