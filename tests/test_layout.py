"""The package's layout: the lesson core flat in b2b/, the tiny world and the tools in subpackages,
no import cycles, no wrong-way imports, every public name resolving where its code lives (no old
module names), the wheel complete."""
import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "b2b"
LESSON = ("rollout", "reward", "advantages", "train", "evaluate")
BUILDERS = ("b2b.tinyworld.build_data", "b2b.tinyworld.tiny")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every b2b module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("b2b")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("b2b"):
            for a in node.names:  # `from b2b import runs` imports the module b2b.runs
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(p) - {"b2b", name} for name, p in MODULES.items() if name not in ("b2b", "b2b._moved")}


def test_the_layout():
    flat = {p.stem for p in PKG.glob("*.py")}
    assert set(LESSON) <= flat
    tinyworld, tools = ({p.stem for p in (PKG / sub).glob("*.py")} for sub in ("tinyworld", "tools"))
    assert {"world", "knowledge", "responses", "gold", "build_data", "tiny"} <= tinyworld
    assert {"cli", "bench", "showdown", "troubleshooting", "trl_bridge"} <= tools
    assert not flat & {"world", "gold", "responses", "build_data", "tiny", "cli", "bench", "showdown",
                       "troubleshooting", "trl_bridge", "pipeline", "decoder"}, "moved modules stay moved"
    assert len((PKG / "train.py").read_text().splitlines()) <= 330


def test_no_import_cycles():
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"
    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_the_cycle_check_finds_a_cycle():
    GRAPH["b2b.advantages"] = GRAPH["b2b.advantages"] | {"b2b.train"}
    try:
        with pytest.raises(AssertionError, match="import cycle"):
            test_no_import_cycles()
    finally:
        GRAPH["b2b.advantages"] -= {"b2b.train"}


def test_the_lesson_core_imports_neither_the_tools_nor_the_builders():
    core = [m for m in GRAPH if not m.startswith(("b2b.tools", "b2b.tinyworld")) and m != "b2b.__main__"]
    for m in core:
        wrong = {n for n in GRAPH[m] if n.startswith("b2b.tools") or n in BUILDERS}
        assert not wrong, f"{m} imports {sorted(wrong)}"
    for m in [m for m in GRAPH if m.startswith("b2b.tinyworld")]:  # the simulator needs no tooling either
        assert not {n for n in GRAPH[m] if n.startswith("b2b.tools")}, m


OLD_NAMES = [  # modules that were split or moved: nothing may call them any more (where the code lives now)
    "b2b.pipeline", "b2b.world", "b2b.responses", "b2b.gold", "b2b.build_data", "b2b.tiny", "b2b.cli", "b2b.bench",
    "b2b.showdown", "b2b.troubleshooting", "b2b.trl_bridge", "b2b.decoder", "b2b._moved",
]
PUBLIC_NAMES = [  # what the README and docs call, beside the notebooks' own names
    "b2b.tinyworld.world.KB", "b2b.tinyworld.world.World", "b2b.tinyworld.gold.judge", "b2b.tools.cli.main",
    "b2b.tools.bench.run_bench", "b2b.tools.showdown.run_showdown", "b2b.tools.showdown.meets",
    "b2b.tools.trl_bridge.trl_rloo", "b2b.decoding.LlamaDecoder", "b2b.recipes.rl_config",
    "b2b.reward_models.course_reward_model", "b2b.data.rl_prompts", "b2b.algorithms.ALGORITHMS",
    "b2b.step.rl_step", "b2b.train", "b2b.History", "b2b.World", "b2b.judge", "b2b.evaluate_policy",
    "b2b.load_policy", "b2b.setup", "b2b.reward_scores", "b2b.plots.plot_rl_run", "b2b.widgets.sample_replay",
]


def _resolve(dotted: str):
    """`from MODULE import NAME` for the longest importable module prefix of `dotted`."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ModuleNotFoundError(dotted)


def _notebook_code() -> list[str]:
    return ["".join(cell["source"]) for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))
            for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"] if cell["cell_type"] == "code"]


def _notebook_attributes() -> set[str]:
    """The `b2b.x.y` chains the notebooks read as attributes of the package."""
    return {name for src in _notebook_code() for name in re.findall(r"\bb2b(?:\.[A-Za-z_]\w*)+", src)}


def _notebook_names() -> set[str]:
    """Those chains and every `from b2b.x import y` of the notebooks, as dotted names."""
    names = _notebook_attributes()
    for src in _notebook_code():
        for module, imported in re.findall(r"from (b2b[\w.]*) import ([\w, ()]+)", src):
            names |= {f"{module}.{n}" for n in re.split(r"[,\s()]+", imported) if n}
    return names


@pytest.mark.parametrize("name", sorted(set(PUBLIC_NAMES) | _notebook_names()))
def test_every_public_name_resolves(name):
    assert _resolve(name) is not None


def test_attributes_of_a_fresh_import_resolve():
    """`import b2b` then `b2b.world.KB`, `b2b.showdown.run_showdown`, ...: in a fresh interpreter, where
    no earlier import has bound the submodules to the package."""
    chains = sorted(_notebook_attributes() | set(PUBLIC_NAMES))
    code = ("import b2b, functools, sys\nbad = []\nfor c in sys.argv[1:]:\n    try:\n"
            "        functools.reduce(getattr, c.split('.')[1:], b2b)\n    except AttributeError as e:\n"
            "        bad.append(f'{c}: {e}')\nprint('\\n'.join(bad))")
    out = subprocess.run([sys.executable, "-c", code, *chains], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_no_notebook_doc_or_test_calls_a_moved_module():
    """The notebooks, docs, README and tests call each name where its code lives: no old module name
    (b2b.pipeline, b2b.showdown, ...), no private name of another module, and no import hook."""
    assert not (PKG / "_moved.py").exists()
    old = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in OLD_NAMES) + r")(?![\w-])")
    files = [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md",
             *(ROOT / "tests").glob("*.py"), *PKG.rglob("*.py")]
    found = [f"{f.relative_to(ROOT)}: {m[0]}" for f in files if f.name != "test_layout.py"
             for m in old.finditer(f.read_text(encoding="utf-8"))]
    assert not found, found
    private = [n for n in _notebook_names() if any(part.startswith("_") for part in n.split(".")[1:])]
    assert not private, private
    for name in OLD_NAMES:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


def test_the_wheel_holds_the_subpackages(tmp_path):
    wheel = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel),
                    str(ROOT)], check=True, timeout=300, capture_output=True)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(next(wheel.glob("b2b-*.whl")))], check=True, timeout=300, capture_output=True)
    code = ("import b2b, b2b.tinyworld.world, b2b.tools.cli, b2b.tools.showdown, b2b.runs, b2b.recipes; "
            "print(b2b.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target)), out.stdout
