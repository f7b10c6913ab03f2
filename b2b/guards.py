"""What stops a run in one line: a config field out of range, a NaN or inf, CUDA out of memory.

Every config dataclass (`RLConfig`, `RewardConfig`, `TinyConfig`) validates through `check_fields`;
the training loops turn a non-finite tensor or an out-of-memory error into a one-line
`TrainingError` that names the step, the last good checkpoint and what to change. None of this is
the lesson: `b2b.train` and `b2b.reward` call it so that their loops read as the algorithm.
"""
from __future__ import annotations

import torch

from b2b.errors import ConfigError, TrainingError


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_fields(cfg, where: str = "config: field '", positive=(), non_negative=(), whole=(), choices=None,
                 rules=(), flags=()):
    """`cfg` itself, or a `ConfigError` naming its first bad field, checked in this order: the
    `positive` fields (> 0), the `non_negative` ones (>= 0), the `whole` ones (ints), `choices`
    ({field: allowed values}), the `flags` (True or False), then `rules`: (ok(), field, message)
    for what ties fields together.
    `where` prefixes the field's name in the message."""
    def bad(name, expected):
        return ConfigError(f"{where}{name}': expected {expected}, got {getattr(cfg, name)!r}")
    for name in positive:
        if not (_number(getattr(cfg, name)) and getattr(cfg, name) > 0):
            raise bad(name, "a positive number")
    for name in non_negative:
        if not (_number(getattr(cfg, name)) and getattr(cfg, name) >= 0):
            raise bad(name, "a number >= 0")
    for name in whole:
        if not isinstance(getattr(cfg, name), int):
            raise bad(name, "a whole number")
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            raise bad(name, "one of " + ", ".join(map(str, allowed)))
    for name in flags:
        if not isinstance(getattr(cfg, name), bool):
            raise bad(name, "true or false")
    for ok, name, message in rules:
        if not ok():
            raise ConfigError(f"{where}{name}': {message}")
    return cfg


def not_finite(name: str, step: int, ckpt: str, done: str = "the policy was not updated") -> TrainingError:
    """The one-line error for a NaN or inf in tensor `name` at `step`."""
    return TrainingError(f"step {step}: {name} is not finite (NaN or inf); training stopped, {done}; last good "
                         f"checkpoint: {ckpt}. Try a lower learning rate or check the reward model")


def check_finite(name: str, x: torch.Tensor, step: int, ckpt: str) -> torch.Tensor:
    """`x` itself, or a one-line TrainingError naming `name`, the step and the last good checkpoint."""
    if not bool(torch.isfinite(x).all()):
        raise not_finite(name, step, ckpt)
    return x


def smaller_batch(batch_size: int, multiple: int = 1) -> int | None:
    """Half of `batch_size`, rounded down to a multiple of `multiple` (k, minibatches); None if
    that leaves nothing."""
    half = batch_size // 2 // multiple * multiple
    return half or None


def out_of_memory(fn, message):
    """`fn()`, with CUDA running out of memory turned into `TrainingError(message())`. It is raised
    outside the handler, so the traceback that holds the failed step's tensors is gone (and their
    memory freed) when the error reaches a notebook."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise TrainingError(message())


def oom_guard(fn, step: int, where: str, knob: str, size: int, smaller: int | None, ckpt: str):
    """`fn()` inside an RL run: out of memory is one line naming the step, the batch size and a
    smaller one."""
    fix = f"try {knob}={smaller}" if smaller else "try a smaller max_new_tokens"
    then = " and resume from it" if ckpt != "none" else ""
    return out_of_memory(fn, lambda: f"step {step}: out of GPU memory in {where} with {knob} {size}; training "
                                     f"stopped; last good checkpoint: {ckpt}; {fix}{then}")
