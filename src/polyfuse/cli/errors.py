"""One way for every console entry point to report a user's mistake: a message, no traceback.

``polyfuse-train`` / ``-eval`` / ``-explain`` / ``-report`` run their work inside
:func:`user_errors`. An error in what the user passed (:class:`~polyfuse.errors.UserInputError`
and its subclasses -- ``DataFileError``, ``CheckpointError``, ``ConfigValueError``,
``UntrustedConfigError`` --, a missing file, a mandatory config value left at ``???``) is printed as
``<program>: error: <message>`` on stderr and the process exits with :data:`EXIT_USER_ERROR` (2,
the status ``argparse`` uses for bad arguments). Any other exception is a bug and keeps its
traceback. ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) shows the full traceback for user errors too.

In one job of a multirun (``-m``) the message is printed and the exception goes on to the sweeper,
which decides whether the sweep continues (Optuna marks the trial failed). Errors in composing the
config (an unknown key, a bad override) are reported by Hydra before the entry point runs: one
message naming the key, exit status 1.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from omegaconf.errors import MissingMandatoryValue

from polyfuse.errors import UserInputError

__all__ = ["EXIT_USER_ERROR", "USER_ERRORS", "user_error_in", "user_message", "user_errors"]

EXIT_USER_ERROR = 2
USER_ERRORS: tuple[type[BaseException], ...] = (UserInputError, FileNotFoundError, MissingMandatoryValue)
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def user_error_in(error: BaseException) -> BaseException | None:
    """The user error ``error`` is or was raised from (Hydra's ``InstantiationException`` and others
    wrap the original as ``__cause__``), else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, USER_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def user_message(error: BaseException) -> str:
    """The error's message without traceback text: a DataLoader worker re-raises its exception with
    the worker's traceback in the message (``Caught X in DataLoader worker process 0. Original
    Traceback ...``); only the original message is kept."""
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "?"
        return f"config key '{key}' has no value (it is '???' in the config): pass {key}=<value> on the command line"
    text = str(error)
    if _WORKER_TRACEBACK in text:
        marker = f"{type(error).__name__}: "
        tail = text.split(_WORKER_TRACEBACK, 1)[1]
        text = tail.split(marker, 1)[1] if marker in tail else tail.strip().splitlines()[-1]
    return text.strip()


@contextmanager
def user_errors(program: str) -> Iterator[None]:
    """Run the block; a user error inside it (see :func:`user_error_in`) is printed as one message
    on stderr and exits the process with status 2, unless ``HYDRA_FULL_ERROR=1``."""
    try:
        yield
    except Exception as error:
        found = user_error_in(error)
        if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stdout.flush()
        print(f"{program}: error: {user_message(found)}", file=sys.stderr, flush=True)
        if _in_multirun():  # the sweeper decides: Optuna marks the trial failed and goes on
            raise
        raise SystemExit(EXIT_USER_ERROR) from None


def _in_multirun() -> bool:
    """Whether this is one job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
