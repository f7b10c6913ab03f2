"""The package's layout: the lesson core flat in b2b/, the tiny world and the tools in subpackages,
no import cycles, no wrong-way imports, every old name still resolving, the wheel complete."""
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


OLD_NAMES = [  # what the notebooks and the README called before the tiny world and the tools moved
    "b2b.pipeline.course_reward_model", "b2b.pipeline.preference_splits", "b2b.pipeline.reward_config",
    "b2b.pipeline.reward_model_for", "b2b.pipeline.rl_config", "b2b.pipeline.rl_prompts",
    "b2b.pipeline.reward_stage", "b2b.pipeline.ALGO_SETTINGS", "b2b.pipeline.shipped_reward_model",
    "b2b.showdown.aggregate", "b2b.showdown.cached_run", "b2b.showdown.claims", "b2b.showdown.claims_table",
    "b2b.showdown.markdown_table", "b2b.showdown.method_config", "b2b.showdown.method_run",
    "b2b.showdown.plot_showdown", "b2b.showdown.run_policy", "b2b.showdown.run_showdown",
    "b2b.showdown.pooled_evaluation", "b2b.showdown.same_config",
    "b2b.trl_bridge.trl_reward_model", "b2b.trl_bridge.trl_rloo", "b2b.world.FAMILIES", "b2b.world.KB",
    "b2b.world.Style", "b2b.world.World", "b2b.gold.judge", "b2b.gold.gold_rating", "b2b.build_data.write_data",
    "b2b.build_data.reference_responses", "b2b.tiny.build_tiny", "b2b.cli.main", "b2b.bench.run_bench",
    "b2b.troubleshooting.cases", "b2b.decoder.LlamaDecoder", "b2b.responses.write_response",
    "b2b.train.comparison_table", "b2b.train.summary", "b2b.train.History", "b2b.train.RLConfig",
    "b2b.train.ALGOS", "b2b.train.latest_checkpoint", "b2b.train.policy_rewards", "b2b.train.check_prompts_fit",
    "b2b.train.REWARD_FILE", "b2b.train.RUN_FILES", "b2b.rollout.chat_prompts", "b2b.rollout.position_ids",
    "b2b.config.default_device", "b2b.config.pick_dtype", "b2b.History", "b2b.World", "b2b.judge", "b2b.train",
    "b2b.evaluate_policy", "b2b.load_policy", "b2b.setup", "b2b.plots.plot_rl_run", "b2b.widgets.sample_replay",
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


@pytest.mark.parametrize("name", sorted(set(OLD_NAMES) | _notebook_names()))
def test_every_public_name_resolves(name):
    assert _resolve(name) is not None


def test_attributes_of_a_fresh_import_resolve():
    """`import b2b` then `b2b.world.KB`, `b2b.showdown.run_showdown`, ...: in a fresh interpreter, where
    no earlier import has bound the submodules to the package."""
    chains = sorted(_notebook_attributes() | {n for n in OLD_NAMES if not n.startswith("b2b.train.")})
    code = ("import b2b, functools, sys\nbad = []\nfor c in sys.argv[1:]:\n    try:\n"
            "        functools.reduce(getattr, c.split('.')[1:], b2b)\n    except AttributeError as e:\n"
            "        bad.append(f'{c}: {e}')\nprint('\\n'.join(bad))")
    out = subprocess.run([sys.executable, "-c", code, *chains], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_an_old_module_is_the_new_one():
    import b2b.showdown
    import b2b.tools.showdown
    import b2b.world
    from b2b.tinyworld import world

    assert b2b.showdown is b2b.tools.showdown and b2b.world is world
    assert b2b.tools.showdown.__spec__.name == "b2b.tools.showdown"  # the alias leaves the module's own spec
    with pytest.raises(AttributeError):
        _resolve("b2b.pipeline.no_such_name")


def test_the_old_module_runs_with_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "b2b.troubleshooting", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "troubleshooting" in out.stdout, out.stderr


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
