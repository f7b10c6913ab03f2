"""Pack finished run directories into the course's shipped run records (`data/runs/`).

    python -m b2b.tools.records notebooks/runs/showdown-tiny notebooks/runs/nb05-tiny-reward-side \
        --weights showdown-tiny/repetition-penalty-1-2-seed0

A run directory `.../runs/<key>` becomes `data/runs/<key>/`: its config.json, reward_model.json
and the cached evaluations the notebooks read (result.json, final_pooled.json), and its logs
gzip-compressed, exactly as the run wrote them (metrics.jsonl.gz, evals.jsonl.gz, samples.jsonl.gz):
about 120 KB for a 600-step tiny run. No optimizer state, no checkpoint; `--weights KEY` also keeps
that run's final policy, in fp16 (`checkpoints/step-N/policy.safetensors`, 2 MB for the tiny
policy), for a notebook that samples from it. A directory that holds only a cached result
(`b2b.runs.cached_result`: a cross-check's table, a LoRA demonstration's figures) keeps its result.json. A folder of runs (`runs/showdown-tiny`) is packed
run by run, with its own files (sft_pooled.json).

`b2b.runs.restore_record` is the other half: a run directory that holds no run is filled from its
record, then read back like any finished run (only under the same settings and reward model).
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

from b2b.runs import GZIPPED, checkpoint_dir, record_dir, record_key

KEPT = ("config.json", "reward_model.json", "result.json", "final_pooled.json", "sft_pooled.json")
"""The small files of a run directory a record keeps as they are (the logs are GZIPPED)."""


def finished_steps(run_dir: Path) -> int | None:
    """The step count of a finished run directory (its config's `steps`, reached by its metrics
    log), or None when it is not one."""
    cfg, log = run_dir / "config.json", run_dir / "metrics.jsonl"
    if not (cfg.exists() and log.exists()):
        return None
    steps = json.loads(cfg.read_text())["steps"]
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]
    return steps if logged == list(range(1, steps + 1)) else None


def pack_run(run_dir: str | Path, weights: bool = False, dest: Path | None = None) -> Path:
    """Write the record of one finished run directory (see the module doc); returns its folder."""
    run_dir = Path(run_dir)
    steps = finished_steps(run_dir)
    if steps is None:
        raise ValueError(f"{run_dir}: not a finished run (config.json's steps not reached by metrics.jsonl)")
    key = record_key(run_dir)
    if key is None:
        raise ValueError(f"{run_dir}: a record is named by the path below a folder called 'runs'")
    dest = dest or record_dir(key)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in KEPT:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / name)
    for name in GZIPPED:
        if (run_dir / name).exists():
            (dest / f"{name}.gz").write_bytes(gzip.compress((run_dir / name).read_bytes(), mtime=0))
    if weights:
        _half_policy(checkpoint_dir(run_dir, steps), checkpoint_dir(dest, steps))
    return dest


def _half_policy(ckpt: Path, dest: Path) -> None:
    """The checkpoint's policy weights in fp16 (a record is for reading back, not for resuming)."""
    from safetensors.torch import load_file, save_file

    src = ckpt / "policy.safetensors"
    if not src.exists():
        raise ValueError(f"{ckpt}: no policy.safetensors: the run kept no checkpoint of its final step")
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(src)).items()}
    dest.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest / "policy.safetensors"))


def is_cached_result(run_dir: Path) -> bool:
    """Whether a directory holds only a `b2b.runs.cached_result` (result.json with its key, no run logs)."""
    f = run_dir / "result.json"
    if not f.is_file() or (run_dir / "metrics.jsonl").exists():
        return False
    saved = json.loads(f.read_text())
    return isinstance(saved, dict) and set(saved) == {"key", "result"}


def pack_result(run_dir: str | Path, dest: Path | None = None) -> Path:
    """The record of a cached result (`b2b.runs.cached_result`): its result.json, as it is."""
    run_dir = Path(run_dir)
    dest = dest or record_dir(record_key(run_dir))
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copyfile(run_dir / "result.json", dest / "result.json")
    return dest


def pack(paths: list[str | Path], weights: tuple[str, ...] = ()) -> list[Path]:
    """Pack each finished run directory in `paths`, and each finished run inside a folder of runs
    (with the folder's own KEPT files); `weights` names the records (keys) that keep their policy."""
    written = []
    for p in map(Path, paths):
        if record_key(p) is None:
            raise ValueError(f"{p}: a record is named by the path below a folder called 'runs'")
        if finished_steps(p) is not None:
            written.append(pack_run(p, record_key(p) in weights))
            continue
        if is_cached_result(p):
            written.append(pack_result(p))
            continue
        runs = [d for d in sorted(p.iterdir()) if d.is_dir() and finished_steps(d) is not None]
        if not runs:
            raise ValueError(f"{p}: neither a finished run, a cached result nor a folder of finished runs")
        top = record_dir(record_key(p))
        top.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (p / name).exists():
                shutil.copyfile(p / name, top / name)
        written += [pack_run(d, record_key(d) in weights) for d in runs]
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m b2b.tools.records", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="finished run directories, or folders of them, below a 'runs' folder")
    ap.add_argument("--weights", nargs="*", default=(), metavar="KEY", help="records that keep their final policy (fp16)")
    args = ap.parse_args(argv)
    for d in pack(args.paths, tuple(args.weights)):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{d}: {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
