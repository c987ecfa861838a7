"""Exception types of polyprompt.

Every error raised at a public entry point of polyprompt is a subclass of
:class:`PolypromptError`, so callers can catch ours apart from torch's.  Messages
say *what* is wrong and *where* (argument name, shape, file path).
"""

from __future__ import annotations


class PolypromptError(Exception):
    """Base class of every error polyprompt raises on purpose."""


class ConfigError(PolypromptError, ValueError):
    """A configuration value is invalid (raised from ``__post_init__``)."""


class InputError(PolypromptError, ValueError):
    """An input tensor or data item is invalid (rank, shape, dtype, NaN/inf, empty)."""


class ShapeError(InputError):
    """An input tensor has the wrong rank or shape."""


class NonFiniteError(InputError):
    """An input tensor holds NaN or infinite values."""


class RegistryError(PolypromptError, KeyError):
    """Unknown or duplicate method name in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownMethodError(RegistryError):
    """``create(name)`` was called with a name no installed package registers."""


class DuplicateMethodError(RegistryError):
    """Two different classes tried to register the same method name."""


class CheckpointError(PolypromptError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class BackboneMismatchError(CheckpointError):
    """A prompt checkpoint was saved for a different backbone."""
