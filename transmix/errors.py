"""The three ways a command ends on purpose, each a base class with its exit code.

Every error a user can cause or fix (a bad key, a missing dataset, a cut table, a stop asked by SIGTERM) derives
from one of these, so the command line maps errors to exit codes by class, and a renamed or moved error class keeps
its code. This module imports nothing, so reporting an error never loads torch.
"""

from __future__ import annotations


class Failure(Exception):
    """The command could not do its work, and the message says why and what to do (exit code 1)."""

    EXIT = 1
    LABEL = "error"


class BadConfig(Failure):
    """A config or study names a key or value that does not exist or does not fit (exit code 2, as argparse)."""

    EXIT = 2
    LABEL = "config error"


class Stopped(Exception):  # noqa: N818 - a state, not a fault
    """Stopped by a signal after saving its state; rerunning continues (exit code 143 = 128 + SIGTERM)."""

    EXIT = 143
    LABEL = "preempted"
