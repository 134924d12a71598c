"""Errors a user can act on. The CLI prints their message as one line, no traceback."""


class HybridPoseError(Exception):
    """Base class: the message says which file, what is wrong and what to do."""


class DatasetError(HybridPoseError):
    pass


class RunError(HybridPoseError):
    """A run directory or checkpoint is missing, corrupt or foreign."""


class RulesError(HybridPoseError):
    pass


class WeightsError(HybridPoseError):
    pass


class ConfigError(HybridPoseError, ValueError):
    """An option value that cannot work; the message names the option and what is allowed."""
