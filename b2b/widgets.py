"""Notebook display helpers: HTML tables and small ipywidgets explorers.

Every explorer also works without a live kernel: its first view is rendered as HTML output, so
a reader of the committed notebook on GitHub sees it too.
"""
from __future__ import annotations

import html

import torch


def _esc(x) -> str:
    if isinstance(x, float):
        return f"{x:.2f}"
    return html.escape(str(x)).replace("\n", "<br>")


def table_html(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain HTML table of `rows` (dicts), text left-aligned, numbers to 2 decimals. Without
    `columns`, a column that is None in every row (gold, outside the tiny world) is left out."""
    columns = columns or [c for c in rows[0] if any(r.get(c) is not None for r in rows)]
    head = "".join(f"<th style='text-align:left'>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{_esc(r.get(c, ''))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def show_table(rows: list[dict], columns: list[str] | None = None):
    """Display `rows` as a table in a notebook (plain text elsewhere)."""
    from IPython.display import HTML, display

    display(HTML(table_html(rows, columns)))


def _pair_html(pair: dict, index: int, gold=None) -> str:
    rows = []
    for side in ("chosen", "rejected"):
        row = {"": side, "response": pair[side][-1]["content"], "annotator rating": pair[f"{side}_rating"]}
        if gold is not None:
            row["gold rating"] = gold(pair["prompt"], pair[side][-1]["content"])
        rows.append(row)
    return f"<p><b>pair {index}</b> &mdash; prompt: <i>{_esc(pair['prompt'])}</i></p>" + table_html(rows)


def pair_browser(pairs: list[dict], gold=None, start: int = 0):
    """Browse preference pairs with a slider: prompt, chosen and rejected, their annotator
    ratings and (tiny world) their gold ratings. Returns the widget."""
    import ipywidgets as w

    out = w.HTML(_pair_html(pairs[start], start, gold))
    slider = w.IntSlider(value=start, min=0, max=len(pairs) - 1, description="pair", continuous_update=False)
    slider.observe(lambda ch: setattr(out, "value", _pair_html(pairs[ch["new"]], ch["new"], gold)), names="value")
    return w.VBox([slider, out])


def sample_rows(policy, tokenizer, prompts: list[str], temperature: float = 1.0, max_new_tokens: int = 64,
                seed: int = 0, gold: bool = True) -> list[dict]:
    """One sampled completion per prompt as table rows (with gold ratings in the tiny world)."""
    from b2b.tinyworld.gold import judge
    from b2b.rollout import decode_completions, sample_completions

    g = torch.Generator(next(policy.parameters()).device).manual_seed(seed)
    ro = sample_completions(policy, tokenizer, prompts, max_new_tokens, temperature, g)
    texts = decode_completions(tokenizer, ro)
    ended = ro.finished(tokenizer.eos_token_id).tolist()
    rows = []
    for p, t, e in zip(prompts, texts, ended):
        row = {"prompt": p, "response": t + ("" if e else " [no end]")}
        if gold:
            row["gold"] = judge(p, t, e).rating
        rows.append(row)
    return rows


def temperature_explorer(policy, tokenizer, prompts: list[str], gold: bool = True, max_new_tokens: int = 64):
    """A temperature slider and a 'sample' button over a few prompts. Returns the widget."""
    import ipywidgets as w

    temp = w.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.1, description="temperature", continuous_update=False)
    seed = w.IntText(value=0, description="seed")
    out = w.HTML()

    def redraw(*_):
        out.value = table_html(sample_rows(policy, tokenizer, prompts, temp.value, max_new_tokens, seed.value, gold))

    button = w.Button(description="sample")
    button.on_click(redraw)
    temp.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([temp, seed, button]), out])


def _samples_html(rows: list[dict], step: int) -> str:
    sel = [r for r in rows if r["step"] == step]
    cols = [c for c in ("prompt", "response", "gold") if any(c in r for r in sel)]
    return f"<p><b>step {step}</b></p>" + table_html(sel, cols)


def replay_rows(history, n_steps: int = 5) -> list[dict]:
    """The static twin of `sample_replay` (what a viewer without widgets, such as GitHub, can show):
    the logged samples at `n_steps` evenly spaced logged steps, first and last included, one row
    per sample (step, prompt, completion, and gold where the run had a judge)."""
    steps = sorted({r["step"] for r in history.samples})
    if not steps:
        return []
    picks = sorted({steps[round(i * (len(steps) - 1) / max(1, n_steps - 1))] for i in range(n_steps)})
    return [{"step": s["step"], "prompt": s["prompt"], "completion": s["response"],
             **({"gold": s["gold"]} if "gold" in s else {})} for s in history.samples if s["step"] in picks]


def sample_replay(history, start: int | None = None):
    """Replay the samples a run logged: a slider over the steps with logged samples, showing each
    prompt, completion and gold rating. Returns the widget (its first view is also plain HTML)."""
    import ipywidgets as w

    steps = sorted({r["step"] for r in history.samples})
    if not steps:
        raise ValueError("sample_replay: the run logged no samples (set sample_every > 0)")
    first = start if start in steps else steps[0]
    out = w.HTML(_samples_html(history.samples, first))
    slider = w.SelectionSlider(options=steps, value=first, description="step", continuous_update=False)
    slider.observe(lambda ch: setattr(out, "value", _samples_html(history.samples, ch["new"])), names="value")
    return w.VBox([slider, out])


def config_rows(cfg, keys: list[str] | None = None, always: tuple[str, ...] = ("algo", "level", "steps", "epochs",
                                                                                 "batch_size", "lr")) -> list[dict]:
    """The settings of a config dataclass that matter to a reader: `keys` when given, else the
    fields in `always` that it has, then every other field whose value differs from the class's
    default (what a recipe or a profile changed). Floats in `g` format (a learning rate of 2e-4
    stays 0.0002, not 0.00)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if keys is None:
        def default(f):
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return object()
        keys = [k for k in always if k in fields]
        keys += [k for k, f in fields.items() if k not in keys and getattr(cfg, k) != default(f)]
    unknown = [k for k in keys if k not in fields]
    if unknown:
        raise ValueError(f"config_rows: {type(cfg).__name__} has no field {', '.join(unknown)}")
    fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    return [{"setting": k, "value": fmt(getattr(cfg, k))} for k in keys]


def config_table(cfg, keys: list[str] | None = None):
    """`config_rows` as a short two-column markdown table for a notebook, instead of the
    dataclass's one-line repr of every field (`print(cfg)` still shows them all)."""
    import dataclasses

    from IPython.display import Markdown

    rows = config_rows(cfg, keys)
    n = len(dataclasses.fields(cfg))
    return Markdown(f"`{type(cfg).__name__}`: {len(rows)} of its {n} settings (`print(cfg)` shows them all)\n\n"
                    "| setting | value |\n|---|---|\n" + "\n".join(f"| `{r['setting']}` | {r['value']} |" for r in rows))
