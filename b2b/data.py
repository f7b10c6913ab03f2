"""Loading and validating preference pairs and prompts, from shipped JSONL or the hub.

One schema, HelpSteer2-binarized's: `prompt` (str), `chosen` and `rejected` (lists of chat
messages ending with the assistant turn), optional `chosen_rating` / `rejected_rating`.
`chosen` / `rejected` may also be plain response strings (the prompt becomes the user turn), and
files may be CSV with those columns (as the seed's data was) as well as JSONL.
Every problem is a one-line `DataError` naming the file, the line (or row) and the field:

    data/prefs_train.jsonl: line 12: field 'chosen': expected a list of chat messages ending
    with an assistant turn, got str
"""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

from b2b.errors import ConfigError, DataError

PAIR_FIELDS = ("prompt", "chosen", "rejected")
RATING_FIELDS = ("chosen_rating", "rejected_rating")
RATING_RANGE = (0.0, 10.0)  # HelpSteer2 averages lie in [0, 4]; the tiny world's in [1, 10]
ROLES = ("system", "user", "assistant")
HELPSTEER2 = "esfrankel17/original_HelpSteer2_binarized"


def _kind(x) -> str:
    return type(x).__name__


def _check_messages(msgs, where: str, field: str) -> list[dict]:
    expected = "expected a list of chat messages ending with an assistant turn"
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: field '{field}': {expected}, got {_kind(msgs)}"
                        + (" (empty)" if isinstance(msgs, list) else ""))
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: field '{field}[{i}]': expected a message {{'role', 'content'}}, got {_kind(m)}")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: field '{field}[{i}].role': expected one of {', '.join(ROLES)}, got {m['role']!r}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise DataError(f"{where}: field '{field}[{i}].content': expected non-empty text, got "
                            + (repr(m["content"]) if isinstance(m["content"], str) else _kind(m["content"])))
    if msgs[-1]["role"] != "assistant":
        raise DataError(f"{where}: field '{field}': {expected}, but the last role is {msgs[-1]['role']!r}")
    if not any(m["role"] == "user" for m in msgs[:-1]):
        raise DataError(f"{where}: field '{field}': expected a user turn before the assistant turn")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _check_rating(x, where: str, field: str) -> float:
    lo, hi = RATING_RANGE
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise DataError(f"{where}: field '{field}': expected a number in [{lo:g}, {hi:g}], got {x!r}")
    if not lo <= x <= hi:
        raise DataError(f"{where}: field '{field}': expected a number in [{lo:g}, {hi:g}], got {x!r}")
    return float(x)


def validate_pair(row, where: str) -> dict:
    """One preference pair, checked and normalised; `where` prefixes every error message."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with fields {', '.join(PAIR_FIELDS)}, got {_kind(row)}")
    missing = [f for f in PAIR_FIELDS if f not in row]
    if missing:
        raise DataError(f"{where}: missing field '{missing[0]}' (expected {', '.join(PAIR_FIELDS)})")
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise DataError(f"{where}: field 'prompt': expected non-empty text, got "
                        + (repr(row["prompt"]) if isinstance(row["prompt"], str) else _kind(row["prompt"])))
    out = {"prompt": row["prompt"]}
    for f in ("chosen", "rejected"):
        v = row[f]
        if isinstance(v, str):  # a plain response: the conversation is the prompt, then it
            if not v.strip():
                raise DataError(f"{where}: field '{f}': expected a non-empty response, got {v!r}")
            v = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": v}]
        out[f] = _check_messages(v, where, f)
    if out["chosen"][-1]["content"] == out["rejected"][-1]["content"]:
        raise DataError(f"{where}: fields 'chosen'/'rejected': expected two different responses, got the same text")
    if out["chosen"][:-1] != out["rejected"][:-1]:
        raise DataError(f"{where}: fields 'chosen'/'rejected': expected the same conversation before the last turn")
    for f in RATING_FIELDS:
        out[f] = _check_rating(row[f], where, f) if row.get(f) is not None else None
    return out


def read_jsonl(path: str | Path) -> list[tuple[int, object]]:
    """(line number, object) for each non-blank line; bad JSON or bytes are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {n}: expected UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: expected one JSON object per line ({e.msg}, column {e.colno})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected one JSON object per line)")
    return rows


def read_csv(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) of a CSV file with a header; ratings are converted to numbers and
    cells holding a JSON list (chat messages) are parsed; blank ratings become None."""
    import csv
    import io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: expected UTF-8 text ({e.reason} at byte {e.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise DataError(f"{path}: empty file (expected a header line with {', '.join(PAIR_FIELDS)})")
    missing = [f for f in PAIR_FIELDS if f not in reader.fieldnames]
    if missing:
        raise DataError(f"{path}: missing column '{missing[0]}' (expected columns {', '.join(PAIR_FIELDS)}; "
                        f"found {', '.join(reader.fieldnames)})")
    rows = []
    for row in reader:
        n = reader.line_num
        for f in ("chosen", "rejected"):
            v = row.get(f)
            if isinstance(v, str) and v.lstrip().startswith("[{"):
                try:
                    row[f] = json.loads(v)
                except json.JSONDecodeError:
                    pass  # plain text that happens to start with "[{"
        for f in RATING_FIELDS:
            v = row.get(f)
            if v is None or not v.strip():
                row[f] = None
                continue
            try:
                row[f] = float(v)
            except ValueError:
                raise DataError(f"{path}: line {n}: field '{f}': expected a number, got {v!r}") from None
        rows.append((n, row))
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _hub_rows(name: str, split: str | None):
    import datasets

    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # network, missing split, unknown dataset: one line is enough
        raise DataError(f"{name} [{split}]: cannot load the dataset ({str(e).splitlines()[0]})") from None


def load_preferences(source: str | Path, split: str | None = None, limit: int | None = None) -> list[dict]:
    """Validated preference pairs from a JSONL file (optionally gzipped), a CSV file, a data directory
    (`prefs_{split}.jsonl[.gz]`, split defaults to 'train') or a hub dataset id (e.g.
    HelpSteer2-binarized, split 'average_rating')."""
    p = Path(str(source)).expanduser()
    if p.is_dir():
        p = p / f"prefs_{split or 'train'}.jsonl"
        if not p.exists() and p.with_suffix(".jsonl.gz").exists():  # the shipped train pairs are gzipped
            p = p.with_suffix(".jsonl.gz")
    if p.suffix == ".csv":
        rows = read_csv(p)[:limit]
        return [validate_pair(r, f"{p}: line {n}") for n, r in rows]
    if p.suffix in (".jsonl", ".gz") or p.exists():
        rows = read_jsonl(p)[:limit]
        return [validate_pair(r, f"{p}: line {n}") for n, r in rows]
    rows = _hub_rows(str(source), split)
    n = len(rows) if limit is None else min(limit, len(rows))
    out, same = [], 0
    for i in range(n):
        try:
            out.append(validate_pair(rows[i], f"{source} [{split}]: row {i}"))
        except DataError as e:  # a hub dataset cannot be fixed by its user: tie rows are skipped, and said so
            if "two different responses" not in str(e):
                raise
            same += 1
    if same:
        import warnings
        warnings.warn(f"{source} [{split}]: skipped {same} rows whose chosen and rejected responses are identical")
    return out


def load_prompts(source: str | Path, split: str = "test", limit: int | None = None) -> list[str]:
    """Prompts (user messages) from a data directory (`prompts_{split}.jsonl`) or a JSONL file."""
    p = Path(str(source)).expanduser()
    if p.is_dir():
        p = p / f"prompts_{split}.jsonl"
    out = []
    for n, r in read_jsonl(p)[:limit]:
        if not isinstance(r, dict) or not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise DataError(f"{p}: line {n}: field 'prompt': expected non-empty text")
        out.append(r["prompt"])
    return out


def split_prompts(pairs: list[dict], test_fraction: float = 0.05) -> dict[str, list[str]]:
    """Unique prompts of hub preference data split into train/test by a stable hash of the text
    (the hub dataset has a single split; the tiny world ships its own)."""
    import hashlib

    uniq = list(dict.fromkeys(p["prompt"] for p in pairs))
    def is_test(s):
        return int(hashlib.sha1(s.encode("utf-8")).hexdigest()[:8], 16) / 16**8 < test_fraction
    return {"train": [s for s in uniq if not is_test(s)], "test": [s for s in uniq if is_test(s)]}


MAX_PROMPT_CHARS = 2000  # hub prompts longer than this are skipped for sampling (KV-cache memory)


def prompt_chars(profile) -> int:
    """The longest prompt, in characters, a profile samples from hub-style data."""
    return getattr(profile, "max_prompt_chars", None) or MAX_PROMPT_CHARS


def heldout_prompts(profile, n: int | None = None) -> list[str]:
    """The first `n` held-out prompts of a profile (tiny world: family round-robin order;
    hub data: the hash-split test prompts of at most `prompt_chars(profile)` characters)."""
    n = n or profile.eval_prompts
    if profile.world:
        return load_prompts(profile.preferences, "test", limit=n)
    pairs = load_preferences(profile.preferences, profile.preferences_split)
    return [p for p in split_prompts(pairs)["test"] if len(p) <= prompt_chars(profile)][:n]


# ----------------------------------------------------------------------------- prompt lengths

def chat_prompts(tokenizer, prompts: list[str] | list[list[dict]]) -> list[str]:
    """Prompts (user strings or message lists) as chat-template text ending where the assistant
    turn starts: the one place every prompt of the course is formatted."""
    convs = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    return tokenizer.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)


def prompt_too_long(where: str, prompt, n_tokens: int, max_new_tokens: int, context: int) -> DataError:
    """The one-line error for a prompt that, with `max_new_tokens` sampled after it, overflows the
    policy's context (positions past it are untrained: no crash, just wrong samples and rewards)."""
    text = prompt if isinstance(prompt, str) else str(prompt[-1].get("content", ""))
    head = text[:40] + ("..." if len(text) > 40 else "")
    return DataError(f"{where}: field 'prompt': expected at most {context - max_new_tokens} tokens (the policy's "
                     f"context of {context} minus max_new_tokens {max_new_tokens}), got {n_tokens} tokens in "
                     f"{head!r}; shorten the prompt or lower max_new_tokens")


def check_prompt_lengths(tokenizer, prompts: list, max_new_tokens: int, context: int | None,
                         label: str = "prompt", locate=None) -> int:
    """Raise a one-line error for the first prompt whose chat-formatted tokens plus `max_new_tokens`
    exceed `context` (None: no limit to check); return the longest prompt's length in tokens (0 for
    no prompts). Each distinct prompt is tokenised once.
    `locate(prompt)` may name where the prompt came from (e.g. 'prefs.csv: line 7'); otherwise
    the error names `label` and the prompt's index."""

    if not prompts:
        return 0
    if context is not None and max_new_tokens >= context:
        raise ConfigError(f"config: field 'max_new_tokens': expected fewer than the policy's context of {context} "
                          f"tokens (room for a prompt), got {max_new_tokens}")
    first: dict[str, int] = {}  # each distinct prompt once, at its first index
    for i, p in enumerate(prompts):
        first.setdefault(p if isinstance(p, str) else json.dumps(p), i)
    idx = list(first.values())
    enc = tokenizer(chat_prompts(tokenizer, [prompts[i] for i in idx]), add_special_tokens=False,
                    verbose=False)["input_ids"]
    for i, ids in zip(idx, enc):
        if context is not None and len(ids) + max_new_tokens > context:
            where = (locate(prompts[i]) if locate is not None else None) or f"{label} {i}"
            raise prompt_too_long(where, prompts[i], len(ids), max_new_tokens, context)
    return max(len(ids) for ids in enc)


def locate_prompt(source: str | Path, prompt: str) -> str | None:
    """'FILE: line N' of the first row of a preference file (JSONL, gzipped or not, or CSV) or of a
    data directory's prompt and preference files whose prompt is `prompt`; None if not found (or
    `source` is a hub dataset). Used only to name an error, so it simply reads the files again."""
    p = Path(str(source)).expanduser()
    if p.is_dir():
        files = [p / f"prompts_{s}.jsonl" for s in ("train", "test")] + \
                [p / f"prefs_{s}.jsonl{gz}" for s in ("train", "test") for gz in ("", ".gz")]
    else:
        files = [p]
    for f in files:
        if not f.is_file():
            continue
        rows = read_csv(f) if f.suffix == ".csv" else read_jsonl(f)
        for n, row in rows:
            if isinstance(row, dict) and row.get("prompt") == prompt:
                return f"{f}: line {n}"
    return None


# ----------------------------------------------------------------------------- batches

def epoch_batches(lengths: list[int], batch_size: int, g, pool: int = 32) -> list[list[int]]:
    """One pass over `len(lengths)` examples as batches of indices with similar lengths (less
    padding): shuffle, sort within pools of `pool` batches, shuffle the batches. Only full batches
    are kept (so every step sees `batch_size` examples); with fewer examples than `batch_size` the
    batch shrinks to all of them, so a pass always holds at least one batch."""
    import torch

    n = len(lengths)
    if n == 0:
        raise DataError("batches: no examples to batch (expected at least one)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batches: field 'batch_size': expected a positive whole number, got {batch_size!r}")
    batch_size = min(batch_size, n)
    lengths_t = torch.tensor(lengths)
    perm = torch.randperm(n, generator=g)
    batches = []
    for chunk in perm.split(batch_size * pool):
        chunk = chunk[torch.argsort(lengths_t[chunk], stable=True)]
        batches += [b.tolist() for b in chunk.split(batch_size) if len(b) == batch_size]
    return [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]


def length_batches(lengths: list[int], batch_size: int, g, pool: int = 32):
    """Endless batches of indices with similar lengths: `epoch_batches` pass after pass. Every pass
    holds at least one batch, so each `next` returns after at most one pass's work."""
    while True:
        yield from epoch_batches(lengths, batch_size, g, pool)


def warmup_cosine(opt, warmup: int, steps: int):
    """Learning rate x min(1, (s + 1) / warmup) x (1 + cos(pi * s / steps)) / 2 at step s (no
    warm-up factor when warmup is 0)."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


# ----------------------------------------------------------------------------- a run's splits

def pairs_text(n: int) -> str:
    return f"{n} pair" if n == 1 else f"{n} pairs"


def in_world(profile, data: str | None = None) -> bool:
    """Does a run on `data` live in the tiny world (so the gold judge can rate its answers)? Only
    with the profile's own tiny-world data: another file's prompts are not the world's."""
    if not profile.world:
        return False
    return data is None or Path(str(data)).expanduser().resolve() == Path(profile.preferences).resolve()


def preference_splits(profile, data: str | None = None, say=print) -> tuple[list[dict], list[dict]]:
    """(train pairs, held-out pairs) for a run.

    The tiny world ships its own held-out file; a single file or a hub dataset is split by a
    stable hash of the prompt (5% held out), so no prompt is in both. A file too small for that
    split (no pair held out, or none left to train on) is said in one line through `say`.
    """
    source = data or profile.preferences
    p = Path(str(source)).expanduser()
    if p.is_dir() and (p / "prefs_test.jsonl").exists():
        return load_preferences(p, "train"), load_preferences(p, "test")
    pairs = load_preferences(source, None if p.exists() else profile.preferences_split)
    test_prompts = set(split_prompts(pairs)["test"])
    train = [x for x in pairs if x["prompt"] not in test_prompts]
    test = [x for x in pairs if x["prompt"] in test_prompts]
    if not train:  # a handful of pairs can all hash into the held-out share: train on them all
        say(f"{source}: all {pairs_text(len(pairs))} fell in the held-out share of the split; training on all of "
            "them, with no held-out pairs")
        return pairs, []
    if not test:
        say(f"{source}: {pairs_text(len(pairs))} leave none held out (5% of the prompts, by hash); held-out "
            "metrics are skipped, training-pair accuracy is reported instead")
    return train, test

def family_balanced(prompts: list[str], families: list[str]) -> list[str]:
    """Prompts repeated so that each family is equally common (each family's list cycled up to the
    longest one's length, families interleaved): drawing uniformly from the result draws the family
    uniformly, as the tiny world's SFT and preference data do. (Uniform over the prompts themselves
    would be 73% comparisons, the family with the most phrasings.)"""
    by: dict[str, list[str]] = {}
    for p, f in zip(prompts, families):
        by.setdefault(f, []).append(p)
    n = max((len(v) for v in by.values()), default=0)
    return [v[i % len(v)] for i in range(n) for v in by.values()]


def rl_prompts(profile, data: str | None = None) -> tuple[list[str], list[str], bool]:
    """(training prompts, held-out prompts, world) for a run: the tiny world's prompt files, or the
    prompts of a preference dataset split by a stable hash (then `world` is False: no gold judge)."""
    if in_world(profile, data):
        from b2b.tinyworld.world import World

        world = World()
        prompts = load_prompts(profile.preferences, "train")
        return family_balanced(prompts, [world.spec(p).family for p in prompts]), heldout_prompts(profile), True
    train, test = preference_splits(profile, data, say=lambda _: None)  # the reward stage says it
    def uniq(pairs):
        return [p for p in dict.fromkeys(x["prompt"] for x in pairs) if len(p) <= prompt_chars(profile)]
    return uniq(train), uniq(test)[: profile.eval_prompts], False
