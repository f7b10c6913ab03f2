"""The tiny world: a simulator small enough to hold in your head, with a gold judge.

`knowledge` (facts, prompt families, answer styles) -> `responses` (the answer writer) -> `world`
(`World`: prompts, splits, answers) -> `gold` (the judge and the simulated annotators); `build_data`
writes the shipped data files and `tiny` builds the tiny SFT policy from them.
"""


def __getattr__(name: str):
    """`b2b.tinyworld.<module>` loads the module on first use."""
    import importlib
    import pkgutil

    if name in {m.name for m in pkgutil.iter_modules(__path__)}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
