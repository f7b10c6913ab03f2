"""The project's layout and its one dependency list."""
import json
import re
import tomllib

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_top_level_layout():
    names = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"}
    names -= {"__pycache__", "b2b.egg-info", "build", "venv", ".venv", "mutants"}  # mutants: tests/mutation.py's work folder
    assert names == {"notebooks", "b2b", "data", "docs", "img", "tests", "environment.yml", "README.md",
                     "pyproject.toml", ".ci", "colab-constraints.txt"}


def test_colab_constraints_pin_colab_images_versions_and_the_lower_bounds_admit_them():
    """The setup cell installs with colab-constraints.txt (Colab's own transformers, datasets, peft,
    ipywidgets kept); pyproject's lower bounds are at most those versions, and torch is not pinned."""
    pins = dict(line.split("==") for line in (ROOT / "colab-constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert set(pins) == {"transformers", "datasets", "peft", "ipywidgets"}
    deps = {re.split(r"[<>=!~ \[]", d)[0].lower(): d for d in PYPROJECT["project"]["dependencies"]}

    def version(v):
        return tuple(int(x) for x in v.split("."))
    for name, pinned in pins.items():
        lower = deps[name].split(">=")[1]
        assert version(lower) <= version(pinned), (name, lower, pinned)


def test_dependencies_cover_the_course_and_leave_torch_unpinned():
    deps = {re.split(r"[<>=!~ \[]", d)[0].lower(): d for d in PYPROJECT["project"]["dependencies"]}
    dev = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    for name in ("torch", "transformers", "trl", "peft", "datasets", "matplotlib", "ipywidgets", "tqdm"):
        assert name in deps, name
    for name in ("jupyterlab", "nbval", "pytest"):
        assert name in dev, name
    assert "==" not in deps["torch"] and "<" not in deps["torch"]
    assert all(">=" in d for d in deps.values()), "lower bounds only"


def test_environment_yml_defers_to_pyproject():
    text = (ROOT / "environment.yml").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    assert "- conda-forge" in lines
    conda = [l[2:] for l in lines if l.startswith("- ") and l not in ("- conda-forge", "- pip:")]
    py = [c for c in conda if c.startswith("python")]
    assert len(py) == 1 and "pip" in conda and "-e .[dev]" in conda
    assert set(conda) == {py[0], "pip", "-e .[dev]"}, "every other dependency lives in pyproject.toml"
    version = py[0].split("=")[1]
    need = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, version.split("."))) >= tuple(map(int, need.split(".")))


def test_console_script():
    assert PYPROJECT["project"]["scripts"]["b2b"] == "b2b.tools.cli:main"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"<!-- test-command -->\s*```bash\n(.+?)\n```", readme, re.S)
    assert m, "README marks its test command with <!-- test-command -->"
    assert m.group(1).strip() in ci


def test_the_real_model_suite_is_cis_second_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    real = "B2B_PROFILE=colab-smoke python -m pytest -m real_model"
    assert f"```bash\n{real}\n```" in readme
    assert ci.index(real) > ci.index("python -m pytest")  # after the test command, as its own step


def test_package_loads_safely():
    """Every torch.load passes weights_only=True; nothing trusts remote code or unpickles."""
    import re
    from pathlib import Path

    import b2b

    pkg = Path(b2b.__file__).parent
    sources = {str(p.relative_to(pkg)): p.read_text(encoding="utf-8") for p in pkg.rglob("*.py")}
    assert sources
    for name, src in sources.items():
        for call in re.findall(r"torch\.load\((.*?)\)\n", src, flags=re.S):
            assert "weights_only=True" in call, f"{name}: torch.load without weights_only=True"
        assert "trust_remote_code=True" not in src, name
        assert not re.search(r"\bpickle\.loads?\(", src), name
        assert "use_safetensors=False" not in src, name


def test_every_notebook_opens_with_the_colab_badge_runtime_note_and_the_same_setup_cell():
    setups = set()
    books = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(books) >= 6
    for path in books:
        cells = json.loads(path.read_text())["cells"]
        head = "".join(cells[0]["source"])
        badge = re.search(r"\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/notebooks/([^)]+)\)",
                          head)
        assert badge and badge.group(2) == path.name, path.name
        assert re.search(r"\*Runtime: .*`tiny`.*(`colab`|`tiny-smollm2`)", head), path.name
        setup = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
        assert f"git clone -q --depth 1 https://github.com/{badge.group(1)} " in setup, path.name
        # from the repository, not editable, with the constraints file of Colab's tested versions
        assert "%pip install -q -c /content/b2b/colab-constraints.txt /content/b2b " in setup and " -e " not in setup
        assert (ROOT / "colab-constraints.txt").exists()
        # notebooks 04-08 need the gold judge: on Colab, SmolLM2 in the tiny world (b2b.setup(gold=True))
        gold = path.name[:2] in ("04", "05", "06", "07", "08")
        last = setup.rstrip().splitlines()[-1]
        assert last.startswith("profile = b2b.setup(drive=DRIVE, gold=True)" if gold else "profile = b2b.setup(drive=DRIVE)"), \
            path.name
        setups.add(setup.rstrip().rsplit("\n", 1)[0])
    assert len(setups) == 1, "the setup cell differs between notebooks (above its last line)"
