"""``stgcmt`` command line: a thin layer that parses arguments and calls the library.

Each sub-command lives in its own module with ``register(subparsers)``; the module's ``run``
returns the process exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from stgcmt import __version__
from stgcmt.cli import agent_cmd, echo_cmd, scp_cmd, send_cmd, status_cmd
from stgcmt.cli.common import EXIT_USAGE, fail
from stgcmt.config import ConfigError
from stgcmt.scp import StorageUnavailable

COMMANDS = (scp_cmd, send_cmd, agent_cmd, status_cmd, echo_cmd)

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
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="stgcmt",
        description="DICOM Storage Commitment (Push Model) archive and tools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stgcmt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigError, StorageUnavailable) as exc:
        # A bad configuration or unwritable storage found by any command: exit 3, one line.
        return fail(args, str(exc))


if __name__ == "__main__":
    sys.exit(main())
