"""Old module names keep working: `import b2b.showdown`, `from b2b.world import World`,
`python -m b2b.troubleshooting` and `b2b.pipeline.rl_config` resolve to where the code lives now.

`MOVED` maps an old module to its new one (the same module object, so a monkeypatch of one is a
monkeypatch of the other). `b2b.pipeline` was split by what it held: `DISSOLVED` gives each old
name's new module, and the old module is a thin one that forwards those names.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

MOVED = {
    "b2b.world": "b2b.tinyworld.world", "b2b.responses": "b2b.tinyworld.responses",
    "b2b.gold": "b2b.tinyworld.gold", "b2b.build_data": "b2b.tinyworld.build_data", "b2b.tiny": "b2b.tinyworld.tiny",
    "b2b.cli": "b2b.tools.cli", "b2b.bench": "b2b.tools.bench", "b2b.showdown": "b2b.tools.showdown",
    "b2b.troubleshooting": "b2b.tools.troubleshooting", "b2b.trl_bridge": "b2b.tools.trl_bridge",
    "b2b.decoder": "b2b.decoding",
}
DISSOLVED = {"b2b.pipeline": {
    **dict.fromkeys(("reward_config", "rl_config", "ALGO_SETTINGS"), "b2b.recipes"),
    **dict.fromkeys(("SHIPPED_REWARD_MODELS", "TRAINING_RECORD", "training_record", "reward_model_for",
                     "course_reward_dir", "course_reward_model", "train_from_backbone", "reward_stage",
                     "shipped_reward_model"), "b2b.reward_models"),
    **dict.fromkeys(("in_world", "preference_splits", "family_balanced", "rl_prompts"), "b2b.data"),
}}


OLD_NAMES = set(MOVED) | set(DISSOLVED)


class _Forward(types.ModuleType):
    """A dissolved module: each old name is read from its new home when asked for."""

    def __getattr__(self, name: str):
        home = DISSOLVED[self.__name__].get(name)
        if home is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    def __dir__(self):
        return sorted(DISSOLVED[self.__name__])


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names: a moved module is imported under its new name and bound to the old one."""

    def __init__(self):
        self._specs = {}  # old name -> the moved module's own spec, between create_module and exec_module

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED or fullname in DISSOLVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        if spec.name in DISSOLVED:
            homes = ", ".join(sorted(set(DISSOLVED[spec.name].values())))
            return _Forward(spec.name, f"Old name of a module split into {homes}.")
        module = importlib.import_module(MOVED[spec.name])
        self._specs[spec.name] = module.__spec__  # the import system sets __spec__ to the old name's: put it back
        return module

    def exec_module(self, module) -> None:
        if not isinstance(module, _Forward):
            module.__spec__ = self._specs.pop(module.__spec__.name)

    def get_code(self, fullname):  # `python -m b2b.troubleshooting` runs the moved module's code
        new = MOVED[fullname]
        return importlib.util.find_spec(new).loader.get_code(new)


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
