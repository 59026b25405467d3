"""``stgcmt`` command line: a thin layer that parses arguments and calls the library.

Each sub-command lives in its own module with ``register(subparsers)``; the module's ``run``
returns the process exit status. Only the module of the command given is imported (and none
for ``--version``): the services behind ``scp`` pull in pydicom, the engine and the storage
layer, seconds of start-up on a loaded machine that ``stgcmt --version`` or
``stgcmt send --help`` have no use for.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from stgcmt import __version__

COMMANDS = ("scp", "send", "agent", "status", "echo")
"""Sub-commands; ``stgcmt.cli.<name>_cmd`` implements each."""

EPILOG = """\
commands:
  scp      run the Storage Commitment SCP archive
  send     send files, request commitment, delete/move them once committed
  agent    receive late commitment reports for send and act on them
  status   show transactions and instances (SCP data dir or SCU journal)
  echo     C-ECHO a peer (like DCMTK echoscu): is it there, does it accept us

Peers are written AET@HOST:PORT. Run 'stgcmt COMMAND --help' for examples.
"""


class Parser(argparse.ArgumentParser):
    """Usage errors exit with 3, the status stgcmt documents for usage and connection errors
    (argparse's own 2 means "pending" for ``stgcmt send``). Flags out of range are usage
    errors too: their ``type=`` functions (cli.common) raise, and end up here."""

    def error(self, message: str) -> NoReturn:
        from stgcmt.cli.common import EXIT_USAGE

        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(f"stgcmt.cli.{name}_cmd")


def _commands_needed(argv: Sequence[str]) -> tuple[str, ...]:
    """The sub-commands to register for ``argv``: the one it names; none for a bare
    ``--version``; every one otherwise (``--help``, a usage error to explain)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    if first in COMMANDS:
        return (first,)
    if first is None and "--version" in argv and not {"-h", "--help"} & set(argv):
        return ()
    return COMMANDS


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser with ``commands`` registered (all by default)."""
    parser = Parser(
        prog="stgcmt",
        description="DICOM Storage Commitment (Push Model) archive and tools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stgcmt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands:
        _command_module(name).register(subparsers)
    return parser


def _reported_errors() -> tuple[type[Exception], ...]:
    """Errors any command ends with exit 3 and one line (imported once a command ran)."""
    from stgcmt.config import ConfigError
    from stgcmt.scp import StorageUnavailable

    return (ConfigError, StorageUnavailable)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_commands_needed(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except Exception as exc:
        # A bad configuration or unwritable storage found by any command: exit 3, one line.
        if isinstance(exc, _reported_errors()):
            from stgcmt.cli.common import fail

            return fail(args, str(exc))
        raise


if __name__ == "__main__":
    sys.exit(main())
