"""The course's tools: the `b2b` command line (`cli`), `bench`, the `showdown` of notebook 08,
the `troubleshooting` table of bad inputs, and `trl_bridge` (the same runs through TRL).
"""


def __getattr__(name: str):
    """`b2b.tools.<module>` loads the module on first use."""
    import importlib
    import pkgutil

    if name in {m.name for m in pkgutil.iter_modules(__path__)}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
