"""Errors in what a user passed in: a file, a config key, a value.

Every polyfuse console entry point (``polyfuse-train``, ``-eval``, ``-explain``, ``-report``) prints
a :class:`UserInputError` as one message without a traceback and exits with status 2
(:func:`polyfuse.cli.errors.user_errors`); ``HYDRA_FULL_ERROR=1`` shows the full traceback.
Library code raises subclasses that also derive from the built-in type callers already catch
(``ValueError``, ``RuntimeError``), so ``except ValueError`` keeps working.

This module imports nothing from polyfuse: any layer (data, encoders, training) may use it.
"""

from __future__ import annotations

__all__ = ["UserInputError", "ConfigValueError", "UntrustedConfigError"]


class UserInputError(Exception):
    """Something the user passed is wrong; the message names the file / key / value, what was
    expected, and how to fix it."""


class ConfigValueError(UserInputError, ValueError):
    """A config value has the wrong type or is out of range, or a config key is missing."""


class UntrustedConfigError(UserInputError, ValueError):
    """A config names a callable (``_target_``) outside the modules polyfuse trusts."""
