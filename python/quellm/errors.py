"""quellm's exception types.

Every failure caused by what a user passed in (a file, a shape, a config, a recipe) raises
:class:`QuellmError` or a subclass. It subclasses :class:`ValueError`, so ``except ValueError``
catches it too, and the C++ core's ``std::invalid_argument`` arrives as ``ValueError`` as well.
"""

from __future__ import annotations

__all__ = ["QuellmError", "CheckpointError", "ConfigError"]


class QuellmError(ValueError):
    """Base class of quellm's errors about bad input."""


class CheckpointError(QuellmError):
    """A checkpoint file or directory cannot be read or written: the message names the file
    and, where it applies, the tensor."""


class ConfigError(CheckpointError):
    """``config.json`` is missing, malformed, or describes an architecture or option quellm
    does not support."""
