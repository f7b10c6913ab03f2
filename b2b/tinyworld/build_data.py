"""Build the shipped tiny-world data files in `data/` (and check them).

    b2b build-data            # write data/*.jsonl
    b2b build-data --check    # exit 1 if the shipped files differ from what this code makes

Files (all JSON Lines, one object a line):
- `prefs_train.jsonl.gz`, `prefs_test.jsonl`: preference pairs in the HelpSteer2-binarized schema
  (the 100,000 training pairs gzipped, to keep the repository small):
  `prompt`, `chosen`, `rejected` (chat messages ending with the assistant turn),
  `chosen_rating`, `rejected_rating` (annotator ratings, 1-10). Test pairs use test prompts only.
- `sft.jsonl`: `{"prompt", "completion"}` demonstrations of mixed, mediocre quality.
- `prompts_train.jsonl`, `prompts_test.jsonl`: `{"prompt", "family"}`; RL samples train prompts,
  evaluation uses the first N test prompts (ordered round-robin over families).
"""
from __future__ import annotations

import gzip
import json
import random
from functools import lru_cache
from pathlib import Path

from b2b.tinyworld.gold import annotator_rating
from b2b.tinyworld.world import FAMILIES, PromptSpec, World, reference_responses, sample_style  # noqa: F401

N_TRAIN_PAIRS = 100_000
N_TEST_PAIRS = 2_000
N_SFT = 20_000
DATA_FILES = ["prefs_train.jsonl.gz", "prefs_test.jsonl", "sft.jsonl", "prompts_train.jsonl",
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


def build_rows(world: World | None = None, names: list[str] | None = None) -> dict[str, list[dict]]:
    """The rows of every data file (or of `names`), deterministic in `world.seed` (cached)."""
    seed = (world or World()).seed
    names = DATA_FILES if names is None else names  # [] builds nothing (`check_data` with every file missing)
    return {name: _file_rows(seed, name, N_TRAIN_PAIRS, N_TEST_PAIRS, N_SFT) for name in names}


@lru_cache(maxsize=8)
def _file_rows(seed: int, name: str, n_train: int, n_test: int, n_sft: int) -> list[dict]:
    """One file's rows; each file has its own random stream, so files are built independently."""
    world = World(seed=seed)
    split = world.split
    if name.startswith("prefs_"):
        which, n = ("train", n_train) if name.startswith("prefs_train") else ("test", n_test)
        by_family = _by_family(split[which])
        rng = random.Random(f"prefs-{which}-{seed}")
        return [preference_pair(world, _draw_prompt(rng, by_family), rng) for _ in range(n)]
    if name == "sft.jsonl":
        by_family, rng, rows = _by_family(split["train"]), random.Random(f"sft-{seed}"), []
        for _ in range(n_sft):
            spec = _draw_prompt(rng, by_family)
            rows.append({"prompt": spec.text, "completion": world.respond(spec, rng, sample_style(rng, "sft"))})
        return rows
    which = name.removeprefix("prompts_").removesuffix(".jsonl")
    return [{"prompt": s.text, "family": s.family} for s in split[which]]


def _dumps(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode("utf-8")


def _write(path: Path, rows: list[dict]) -> None:
    data = _dumps(rows)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _read(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def write_data(out: str | Path = "data", world: World | None = None) -> list[Path]:
    """Write every data file into `out`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in build_rows(world).items():
        _write(out / name, rows)
        paths.append(out / name)
    return paths


def check_data(out: str | Path = "data", world: World | None = None) -> list[str]:
    """Names of the shipped files that are missing or differ from what the code generates
    (gzipped files are compared by content)."""
    out = Path(out)
    missing = [name for name in DATA_FILES if not (out / name).exists()]
    present = [name for name in DATA_FILES if name not in missing]
    differ = [name for name, rows in build_rows(world, present).items() if _read(out / name) != _dumps(rows)]
    return [name for name in DATA_FILES if name in missing or name in differ]
