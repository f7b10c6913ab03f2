"""Run directories: what `b2b.train(out=...)` writes, resumes and reads back.

    out/config.json          the RLConfig of the run
    out/reward_model.json    {"fingerprint": ...} of the reward model it trained against
    out/metrics.jsonl        one row per step        (History.steps)
    out/evals.jsonl          held-out evaluations    (History.evals, step 0 = before training)
    out/samples.jsonl        logged completions      (History.samples)
    out/checkpoints/step-N/  policy.safetensors, trainer.pt (optimizer, RNG, baseline), history.json

A finished run is read back from its logs when its checkpoints are gone (a run directory is
finished when its config and reward model are this run's and `metrics.jsonl` reaches cfg.steps).
The course ships such logs as **run records** (`data/runs/`, written by `b2b.tools.records`): a
run directory `.../runs/<key>` that holds no run is first filled from `data/runs/<key>` when that
record exists, so a fresh clone shows every notebook's results at once; whether it is then read
back is decided as for any run directory (the same settings and reward model, or it is trained).

Checkpoints are written atomically (a temporary folder, then a rename) and never hold weights
that are not finite, so the newest one is always a good one. A run resumed from its checkpoint
continues with the same random draws, so on a CPU it equals one uninterrupted run; a finished run
of the same settings and reward model is read back instead of trained again (`reuse`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from b2b.errors import ConfigError
from b2b.guards import not_finite

RUN_FILES = ("checkpoints", "metrics.jsonl", "evals.jsonl", "samples.jsonl")
"""What a run writes that another run into the same directory would overwrite."""
REWARD_FILE = "reward_model.json"
"""A run directory's record of the reward model it trained against: `{"fingerprint": ...}`
(`b2b.models.fingerprint`); runs are resumed and reused only under the same reward model."""
LOGS = {"steps": "metrics.jsonl", "evals": "evals.jsonl", "samples": "samples.jsonl"}


@dataclass
class History:
    """What a run logged: `steps` (one metrics dict per step), `evals` (held-out evaluations,
    step 0 = before training), `samples` (completions every `sample_every` steps)."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    def series(self, key: str, source: str = "steps") -> tuple[list[int], list[float]]:
        """(steps, values) of one metric, skipping steps where it was not logged."""
        rows = [r for r in getattr(self, source) if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{k: list(d.get(k, [])) for k in ("steps", "evals", "samples")})

    def first(self, steps: int) -> "History":
        """The history of the run's first `steps` steps."""
        return History(*([r for r in rows if r["step"] <= steps] for rows in (self.steps, self.evals, self.samples)))

    @property
    def peak_gold(self) -> dict | None:
        """The evaluation with the highest gold mean (tiny world)."""
        rows = [e for e in self.evals if "gold_mean" in e]
        return max(rows, key=lambda e: e["gold_mean"]) if rows else None


# ----------------------------------------------------------------------------- checkpoints

def checkpoints(out: str | Path) -> list[Path]:
    """The `step-N` checkpoints of a run directory, oldest first (a step folder without trainer.pt
    is a shipped record's final policy, weights only: not a checkpoint to resume from)."""
    d = Path(out) / "checkpoints"
    return sorted((c for c in d.glob("step-*") if (c / "trainer.pt").exists()), key=step_of) if d.is_dir() else []


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


def checkpoint_dir(out: str | Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(path: str | Path) -> Path | None:
    """The newest `step-N` checkpoint of a run directory (or `path` itself if it is one)."""
    path = Path(path)
    if (path / "trainer.pt").exists():
        return path
    found = checkpoints(path)
    return found[-1] if found else None


def save_checkpoint(out: Path, step: int, policy, opt, gen: torch.Generator, baseline, history: History,
                    cfg, keep: int, identity: dict | None = None) -> Path:
    """Write checkpoints/step-N atomically and keep the last `keep`. Weights that are not finite are
    never checkpointed: the last good checkpoint stays the newest. `cfg.checkpoint_optimizer` False
    leaves AdamW's moments out (resuming restarts them, and says so)."""
    from safetensors.torch import save_model

    if not bool(torch.stack([torch.isfinite(p).all() for p in policy.parameters()]).all()):
        raise not_finite("a policy weight", step, str(latest_checkpoint(out) or "none"), "no checkpoint written")
    final, tmp = checkpoint_dir(out, step), out / "checkpoints" / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(policy, str(tmp / "policy.safetensors"))
    torch.save({"optimizer": opt.state_dict() if cfg.checkpoint_optimizer else None, "generator": gen.get_state(),
                "step": step, "baseline": baseline}, tmp / "trainer.pt")
    (tmp / "history.json").write_text(json.dumps(history.to_dict()))
    (tmp / "config.json").write_text(json.dumps({**dataclasses.asdict(cfg), **(identity or {})}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_weights(policy, ckpt: Path) -> None:
    from safetensors.torch import load_model

    load_model(policy, str(ckpt / "policy.safetensors"), device=str(next(policy.parameters()).device))


def load_checkpoint(ckpt: Path, policy, opt, gen: torch.Generator) -> tuple[int, object, History]:
    """Restore a checkpoint into `policy`, `opt` and `gen`: (its step, its baseline, its history)."""
    load_weights(policy, ckpt)
    state = torch.load(ckpt / "trainer.pt", weights_only=True, map_location="cpu")
    if state["optimizer"] is not None:
        opt.load_state_dict(state["optimizer"])
    else:
        print(f"resume: {ckpt} holds no optimizer state (checkpoint_optimizer=False): AdamW's moments restart "
              "from zero")
    gen.set_state(state["generator"])
    return state["step"], state["baseline"], History.from_dict(json.loads((ckpt / "history.json").read_text()))


def policy_at(policy_dir, out: str | Path, step: int):
    """The policy a run in `out` had after `step` steps (the model in `policy_dir` with that
    checkpoint's weights); a one-line error names the steps that were kept when that one was not."""
    from b2b.models import load_policy

    ck = checkpoint_dir(out, step)
    if not (ck / "policy.safetensors").exists():
        kept = [step_of(c) for c in checkpoints(out)]
        raise FileNotFoundError(f"{out}: no checkpoint of step {step} (kept: {kept or 'none'})")
    policy = load_policy(policy_dir)
    load_weights(policy, ck)
    return policy


# ----------------------------------------------------------------------------- records and logs

def recorded_reward_fingerprint(run_dir: str | Path) -> str | None:
    """The fingerprint in a run directory's `REWARD_FILE` (None for a run that predates the record);
    an unreadable record is a one-line ConfigError naming the file and field."""
    record = Path(run_dir) / REWARD_FILE
    if not record.exists():
        return None
    try:
        return json.loads(record.read_text())["fingerprint"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"resume: {record}: field 'fingerprint': expected a JSON object "
                          '{"fingerprint": ...} as train writes it') from None


def check_same_reward_model(run_dir: Path, now: str | None) -> None:
    """Refuse to resume a run under another reward model (fingerprint `now`) than the one it
    trained against (a run without the record predates it and is resumed as before): the rewards
    of its two halves would measure different things, silently."""
    was = recorded_reward_fingerprint(run_dir)
    if (run_dir / REWARD_FILE).exists() and was != now:
        raise ConfigError(f"resume: {run_dir} trained against another reward model (fingerprint {was}, this one "
                          f"{now}); resume with that reward model, or start over with overwrite=True (--overwrite)")


def run_files(out: str | Path) -> list[str]:
    """The files of an earlier run in `out` that `train(out=...)` would overwrite."""
    return [name for name in RUN_FILES if (Path(out) / name).exists()]


IDENTITY = ("policy", "profile", "precision")
"""What a run's config.json holds besides RLConfig's fields (`run_identity`): the policy it started
from, the profile it ran in and the precision its learn phase computed in (`b2b.precision`: fp32,
bf16 or fp16; runs recorded before it was written computed in fp32), so a reader (and a notebook) can
tell which model a curve belongs to. A recorded policy must be the run's own for the run to be read
back; the others are for reading."""


STORAGE = ("checkpoint_every", "keep_checkpoints", "checkpoint_optimizer")
"""RLConfig's fields that decide what a run keeps on disk, not what it computes: a run is the same run
whatever they are (`same_config`), so a profile can keep less of it (Colab's disk) and still read back
the course's records."""


def run_identity(policy, profile: str | None = None) -> dict:
    """{"policy": the starting policy's folder or hub name (`data/tiny-sft` -> "tiny-sft"),
    "profile": the profile's name or None}."""
    from pathlib import PurePosixPath

    src = str(getattr(getattr(policy, "config", None), "_name_or_path", "") or "")
    return {"policy": PurePosixPath(src.replace("\\", "/")).name or None, "profile": profile}


def same_config(stored: dict | None, want: dict) -> bool:
    """Whether a saved run's config is `want`; a setting the saved run predates counts as its
    default (so adding an RLConfig field does not invalidate finished runs). The `IDENTITY` keys
    are not settings: only a policy both name must agree; the `STORAGE` fields are not compared."""
    from b2b.rl_config import RLConfig

    if not isinstance(stored, dict) or not isinstance(want, dict):
        return False
    if stored.get("policy") and want.get("policy") and stored["policy"] != want["policy"]:
        return False
    stored, want = ({k: v for k, v in d.items() if k not in IDENTITY + STORAGE} for d in (stored, want))
    if set(stored) - set(want):
        return False
    defaults = dataclasses.asdict(RLConfig())
    return all(stored.get(k, defaults[k]) == v for k, v in want.items())


def append(out: Path | None, source: str, row: dict) -> None:
    """Append `row` to the log of History.`source` ('steps', 'evals', 'samples') in `out`."""
    if out is not None:
        with open(out / LOGS[source], "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def rewrite_logs(out: Path, history: History) -> None:
    """The JSONL logs hold exactly the history (after a resume: up to the checkpoint's step)."""
    for source, name in LOGS.items():
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in getattr(history, source)), encoding="utf-8")


# ----------------------------------------------------------------------------- opening a run

@dataclass
class Opened:
    """Where `train` starts: `resume` (a checkpoint to continue from, or None), the run directory
    `out` (or None), and `done`, the History of a finished run read back instead of trained."""

    out: Path | None
    resume: Path | None = None
    done: History | None = None


# ----------------------------------------------------------------------------- shipped run records

RECORDS = "runs"
"""The folder of the data directory (`b2b.config.data_dir()`) that holds the shipped run records."""
GZIPPED = ("metrics.jsonl", "evals.jsonl", "samples.jsonl")
"""Record files stored gzip-compressed (`<name>.gz`); the others are copied as they are."""


def record_key(out: str | Path) -> str | None:
    """The record name of a run directory: its path below the last folder called `runs`
    (`notebooks/runs/showdown-tiny/rloo-k-4-kl-seed0` -> `showdown-tiny/rloo-k-4-kl-seed0`);
    None when no folder of the path is called `runs`."""
    parts = Path(out).resolve().parts
    if RECORDS not in parts[:-1]:
        return None
    i = len(parts) - 1 - parts[::-1].index(RECORDS)
    return "/".join(parts[i + 1:]) or None


def record_dir(key: str) -> Path:
    from b2b.config import data_dir

    return data_dir() / RECORDS / key


def restore_record(out: str | Path) -> bool:
    """Fill a run directory that holds no run from its shipped record (`record_key`), if one
    exists: config, reward-model record, logs, cached evaluations, and the final policy where the
    record keeps one (as `checkpoints/step-N/policy.safetensors`, weights only: nothing to resume).
    Files already in `out` are left alone, and so are the record's sub-folders other than
    `checkpoints` (each a run of its own, restored by its own call). Returns whether anything was
    restored."""
    import gzip

    out = Path(out)
    key = record_key(out)
    src = record_dir(key) if key else None
    if src is None or not src.is_dir() or run_files(out):
        return False
    restored = False
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(src)
        if len(rel.parts) > 1 and rel.parts[0] != "checkpoints":
            continue
        dest = out / (rel.with_suffix("") if f.suffix == ".gz" else rel)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        tmp = dest.with_name(f".tmp-{dest.name}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        restored = True
    return restored


RESULT_FILE = "result.json"
"""A cached result's file: {"key": what it was computed from, "result": what it is} (`cached_result`)."""


def cached_result(out: str | Path, key: dict, compute, retrain: bool = False):
    """`compute()` (a JSON-able result: a table's rows, a few figures) cached in `out/result.json`
    with `key` (the settings it was computed from): read back when `out` (or the course's shipped
    record of it, `restore_record`) holds the same key, else computed and saved. `retrain` computes
    it again whatever is saved. For what a notebook measures besides a training run (TRL's
    cross-checks, a LoRA demonstration), so that it, too, opens in seconds."""
    out = Path(out)
    key = json.loads(json.dumps(key))  # as it will read back (tuples become lists)
    path = out / RESULT_FILE
    if not retrain:
        if not path.exists():
            restore_record(out)
        if path.exists():
            saved = json.loads(path.read_text())
            if isinstance(saved, dict) and saved.get("key") == key:
                return saved["result"]
    result = compute()
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps({"key": key, "result": result}, indent=1))
    os.replace(tmp, path)
    return result


def logged_history(out: Path) -> History:
    """The History in a run directory's JSONL logs (empty lists where a log is missing)."""
    h = History()
    for source, name in LOGS.items():
        path = out / name
        if path.exists():
            getattr(h, source).extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                                      if line.strip())
    return h


def finished_in_logs(out: Path, cfg, reward_id: str | None, identity: dict | None = None) -> History | None:
    """The first cfg.steps steps of the run in `out`, read from its logs, when `out` holds this run
    (its config.json has these settings but perhaps `steps`, its reward model is `reward_id`) and
    the logs reach cfg.steps; else None."""
    cfg_file = out / "config.json"
    if not cfg_file.exists() or recorded_reward_fingerprint(out) != reward_id:
        return None
    try:
        stored = json.loads(cfg_file.read_text())
    except ValueError:
        return None
    if not isinstance(stored, dict) or not same_config({**stored, "steps": cfg.steps},
                                                        {**dataclasses.asdict(cfg), **(identity or {})}):
        return None
    h = logged_history(out).first(cfg.steps)
    if [r["step"] for r in h.steps] != list(range(1, cfg.steps + 1)):
        return None
    return h


def finished_or_resumable(out: Path, cfg, reward_id: str | None,
                          identity: dict | None = None) -> tuple[History | None, Path | None]:
    """(history, None) when `out` holds this run (the same settings but perhaps `steps`, the same
    reward model) up to cfg.steps or beyond: its first cfg.steps steps are exactly this run;
    (None, out) when it holds this run killed half way, or a shorter one, to continue from its last
    checkpoint (the RNG is checkpointed: the same draws as one long run); (None, None) otherwise.
    A directory without checkpoints is read from its logs (`finished_in_logs`), after being filled
    from the course's shipped record of it when it holds no run (`restore_record`)."""
    ck = latest_checkpoint(out) if out.exists() else None
    if ck is None:
        restore_record(out)
        return (finished_in_logs(out, cfg, reward_id, identity) if out.exists() else None), None
    if recorded_reward_fingerprint(out) != reward_id:
        return None, None
    stored = json.loads((ck / "config.json").read_text())
    if not same_config({**stored, "steps": cfg.steps}, {**dataclasses.asdict(cfg), **(identity or {})}):
        return None, None
    if step_of(ck) >= cfg.steps:
        return History.from_dict(json.loads((ck / "history.json").read_text())).first(cfg.steps), None
    return None, out


def open_run(out, cfg, reward_id: str | None, resume=None, overwrite: bool = False, reuse: bool = False,
             identity: dict | None = None) -> Opened:
    """Check and prepare the run directory before anything is trained.

    resume: a run directory (or checkpoint) to continue, under the reward model it trained against.
    reuse: `out` holding this very run is read back (finished) or continued (killed, shorter);
        holding anything else, it is started over.
    Otherwise a directory that holds a run is refused unless `overwrite`."""
    out = Path(out) if out is not None else None
    if reuse and out is not None and resume is None:
        done, resume = finished_or_resumable(out, cfg, reward_id, identity)
        if done is not None:
            return Opened(out, done=done)
        overwrite = True
    ckpt = None
    if resume is not None:
        ckpt = latest_checkpoint(resume)
        if ckpt is None:
            raise ConfigError(f"resume: {resume}: no checkpoint found (expected checkpoints/step-N inside a run "
                              "directory)")
        check_same_reward_model(ckpt.parent.parent, reward_id)
        out = out or ckpt.parent.parent
    elif out is not None and run_files(out) and not overwrite:
        raise ConfigError(f"out: {out} already holds a run ({', '.join(run_files(out))}); pass resume={str(out)!r} "
                          "to continue it or overwrite=True to start over")
    elif out is not None and (out / "checkpoints").exists():  # overwrite: start over
        shutil.rmtree(out / "checkpoints")
    return Opened(out, resume=ckpt)


def final_weights_kept(out: str | Path, steps: int) -> bool:
    """Whether a run directory holds the policy's weights after `steps` steps (a checkpoint of that
    step, or a shipped record's final policy): what `train(..., reuse=True)` loads when it reads
    the run back. Without them the policy passed in is left as it was."""
    return (checkpoint_dir(out, steps) / "policy.safetensors").exists()


_READ_BACK_EXPLAINED = False
"""Whether this process (a notebook's kernel) has said once what "read back" means."""


def read_back(policy, out: Path, cfg, history: History, progress: bool) -> History:
    """A finished run's history; its weights at cfg.steps go into `policy` where they were kept.
    With `progress`, the first run read back in a process says what that means; later ones say one
    short line each."""
    global _READ_BACK_EXPLAINED
    ck = checkpoint_dir(out, cfg.steps)
    kept = (ck / "policy.safetensors").exists()
    if kept:
        load_weights(policy, ck)
    if progress:
        if not _READ_BACK_EXPLAINED:
            print("Runs already finished with the same settings and reward model are read back from their logs "
                  "instead of trained again (the policy takes the run's final weights where they were kept):")
            _READ_BACK_EXPLAINED = True
        print(f"  {out}: read back, {cfg.steps} steps" + ("" if kept else " (logs only: weights not kept)"))
    return history


def start_logs(out: Path | None, cfg, reward_id: str | None, history: History, identity: dict | None = None) -> None:
    """Write the run's config (with its `IDENTITY`) and reward-model record, and logs that hold
    exactly `history`."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({**dataclasses.asdict(cfg), **(identity or {})}, indent=1))
        (out / REWARD_FILE).write_text(json.dumps({"fingerprint": reward_id}) + "\n")
        rewrite_logs(out, history)
