"""Errors that reach a learner as one clear line (the CLI prints them without a traceback)."""


class B2BError(ValueError):
    """Base class: a problem with the user's input, data, config or model path."""


class DataError(B2BError):
    """Bad preference or prompt data: names the file, line or row, field and what was expected."""


class ModelError(B2BError):
    """A model path that cannot be loaded, or a tokenizer that cannot be fixed."""


class ConfigError(B2BError):
    """An unknown profile, option or value."""


class TrainingError(B2BError):
    """Training stopped: a NaN/inf in a reward, log-prob, loss or gradient (names step and tensor)."""
