# Tests and notebooks (nbval starts kernels with this environment) run in the `ci` profile.
import os

os.environ.setdefault("B2B_PROFILE", "ci")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TINY = DATA / "tiny-sft"


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return TINY


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tokenizer():
    from b2b.models import load_tokenizer
    return load_tokenizer(TINY)


@pytest.fixture(scope="session")
def policy():
    import torch
    from b2b.models import load_policy
    torch.manual_seed(0)
    return load_policy(TINY)


def pytest_collection_modifyitems(config, items):
    """Under mutation testing (mutmut sets MUTANT_UNDER_TEST and stops at the first failing test),
    run the hand-made-tensor tests before the ones that load the tiny policy: most mutants die in
    milliseconds instead of after a training run. Ordinary runs keep pytest's order."""
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    items.sort(key=lambda item: "tiny_dir" in getattr(item, "fixturenames", ()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.b2b_passed = report.passed
    return report


@pytest.fixture(autouse=True)
def _real_model_disk(request):
    """A real-model test's folder holds SmolLM2-sized checkpoints (0.54 GB each): removed as soon as
    the test passes, so the suite's disk stays near one run's instead of the sum of all of them
    (docs/testing.md#the-budget). A failed test keeps its folder to look at."""
    real = request.node.get_closest_marker("real_model") and "tmp_path" in request.fixturenames
    folder = request.getfixturevalue("tmp_path") if real else None
    yield
    if folder is not None and getattr(request.node, "b2b_passed", False):
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
