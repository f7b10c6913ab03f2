"""Committed notebook outputs read well in a static viewer (GitHub draws no widgets)."""
import json
import re
from pathlib import Path

import nbformat

from b2b.tools.execute_notebooks import WIDGET_VIEW, final_bar_text

ROOT = Path(__file__).resolve().parent.parent


def _bar_notebook(left: str, value: float, total: float, right: str):
    state = {"box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
             "l": {"model_name": "HTMLModel", "state": {"value": left}},
             "p": {"model_name": "FloatProgressModel", "state": {"value": value, "max": total}},
             "r": {"model_name": "HTMLModel", "state": {"value": right}}}
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    out = nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "box"},
                                                       "text/plain": "rloo:   0%|          | 0/4 [00:00<?, ?it/s]"})
    nb.cells.append(nbformat.v4.new_code_cell("train()", outputs=[out]))
    nb.cells.append(nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")]))
    return nb


def test_a_bars_fallback_text_becomes_its_final_state():
    nb = _bar_notebook("rloo:\u2007100%", 4.0, 4.0, "\u20074/4\u2007[00:09&lt;00:00,\u2007proxy=2.5]")
    assert final_bar_text(nb) == 1
    assert nb.cells[0].outputs[0]["data"]["text/plain"] == "rloo: 100%| 4/4 [00:09<00:00, proxy=2.5]"
    assert nb.cells[1].outputs[0]["text"] == "1\n"  # other outputs untouched


def test_no_committed_notebook_shows_a_bar_at_zero():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for out in cell.get("outputs", []):
                text = out.get("data", {}).get("text/plain", "")
                text = "".join(text) if isinstance(text, list) else text
                assert not re.search(r"(?<!\d)0%\|", text), f"{path.name}: {text[:80]!r}"


def test_an_explorers_fallback_text_says_what_it_is():
    from b2b.tools.execute_notebooks import EXPLORER_TEXT, explorer_text

    nb = _bar_notebook("rloo:\u2007100%", 4.0, 4.0, "\u20074/4")
    out = nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "x"},
                                                       "text/plain": "VBox(children=(IntSlider(value=0),))"})
    nb.cells.append(nbformat.v4.new_code_cell("explore()", outputs=[out]))
    assert explorer_text(nb) == 1
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == EXPLORER_TEXT
    assert nb.cells[0].outputs[0]["data"]["text/plain"].startswith("rloo:")  # a progress bar is not an explorer


def test_no_committed_notebook_shows_a_widget_repr_or_a_grad_fn():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for out in cell.get("outputs", []):
                text = out.get("data", {}).get("text/plain", "") or out.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                assert not re.match(r"(VBox|HBox|Box|Tab|interactive)\(", text), f"{path.name}: {text[:80]!r}"
                assert "grad_fn=" not in text, f"{path.name}: {text[:80]!r}"
