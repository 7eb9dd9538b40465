"""The ``transmix`` command: its arguments and help are declared in :mod:`.args`, what each subcommand does is in
:mod:`.commands`."""

from transmix.cli.commands import main

__all__ = ["main"]
