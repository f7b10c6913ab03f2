"""Execute notebooks top to bottom in one profile and save them with their outputs, as committed.

    python -m b2b.tools.execute_notebooks 01 02                 # tiny profile (the committed outputs)
    python -m b2b.tools.execute_notebooks 03 --profile ci       # a quick look, not for committing

Each notebook runs in a fresh kernel from `notebooks/` (where its `runs/` live), with
`B2B_PROFILE` set, and is written back in place with its widget state; the time each took is
printed, for the notebook's runtime line. A static viewer (GitHub) cannot draw a widget and shows
its plain-text fallback instead, which for a progress bar is the text it had when it was first
drawn (`0%|          | 0/150`): `final_bar_text` replaces it with the bar's last state.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def final_bar_text(nb) -> int:
    """Give every progress-bar widget output the text of its final state as its plain-text
    fallback (`reinforce: 100% | 150/150 [05:10<00:00, ...]`); returns how many were replaced."""
    import html

    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            box = state.get(view["model_id"]) if view else None
            if not box or box.get("model_name") != "HBoxModel":
                continue
            parts = [state.get(c.removeprefix("IPY_MODEL_"), {}) for c in box["state"].get("children", [])]
            if [p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
                continue
            left, right = (html.unescape(p["state"].get("value", "")).replace("\u2007", " ") for p in (parts[0], parts[2]))
            out["data"]["text/plain"] = f"{left.strip()}|{right.rstrip()}"
            n += 1
    return n


WIDGET_REPR = re.compile(r"^(VBox|HBox|Box|GridBox|Tab|Accordion|interactive|Output)\(")
EXPLORER_TEXT = "(an interactive explorer: run the notebook to use it)"


def explorer_text(nb) -> int:
    """Give every other widget output (an explorer: sliders over samples or pairs) a plain-text
    fallback that says what it is, instead of its Python repr (`VBox(children=(IntSlider(...`);
    returns how many were replaced."""
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if WIDGET_VIEW in data and WIDGET_REPR.match(text):
                data["text/plain"] = EXPLORER_TEXT
                n += 1
    return n


def execute(path: Path, profile: str = "tiny") -> float:
    """Run `path` in a fresh kernel in `profile` and save it; returns the seconds it took."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["B2B_PROFILE"] = profile  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    NotebookClient(nb, timeout=None, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    final_bar_text(nb)
    explorer_text(nb)
    nbformat.write(nb, path)
    return time.time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m b2b.tools.execute_notebooks", description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="+", help="notebook numbers or name prefixes, e.g. 01 02")
    ap.add_argument("--profile", default="tiny", help="profile to run in (default: tiny)")
    ap.add_argument("--dir", default=str(NOTEBOOKS), help="the notebooks' folder (default: this checkout's; e.g. a "
                    "fresh clone's, to time it: its runs/ start empty and are filled from the shipped records)")
    args = ap.parse_args(argv)
    folder, total = Path(args.dir), 0.0
    for prefix in args.notebooks:
        found = sorted(folder.glob(f"{prefix}*.ipynb"))
        if len(found) != 1:
            raise SystemExit(f"error: {prefix}: expected one notebook in {folder} starting with it, found {len(found)}")
        took = execute(found[0], args.profile)
        total += took
        print(f"{found[0].name}: {took:.0f} s ({args.profile})", flush=True)
    if len(args.notebooks) > 1:
        print(f"all {len(args.notebooks)}: {total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
