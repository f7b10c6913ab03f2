"""Execute notebooks top to bottom in one profile and save them with their outputs, as committed.

    python -m b2b.tools.execute_notebooks 01 02                 # tiny profile (the committed outputs)
    python -m b2b.tools.execute_notebooks 03 --profile ci       # a quick look, not for committing

Each notebook runs in a fresh kernel from `notebooks/` (where its `runs/` live), with
`B2B_PROFILE` set, and is written back in place with its widget state; the time each took is
printed, for the notebook's runtime line.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(path: Path, profile: str = "tiny") -> float:
    """Run `path` in a fresh kernel in `profile` and save it; returns the seconds it took."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["B2B_PROFILE"] = profile  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    NotebookClient(nb, timeout=None, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    return time.time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m b2b.tools.execute_notebooks", description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="+", help="notebook numbers or name prefixes, e.g. 01 02")
    ap.add_argument("--profile", default="tiny", help="profile to run in (default: tiny)")
    args = ap.parse_args(argv)
    for prefix in args.notebooks:
        found = sorted(NOTEBOOKS.glob(f"{prefix}*.ipynb"))
        if len(found) != 1:
            raise SystemExit(f"error: {prefix}: expected one notebook in {NOTEBOOKS} starting with it, found {len(found)}")
        print(f"{found[0].name}: {execute(found[0], args.profile):.0f} s ({args.profile})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
