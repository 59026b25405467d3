"""``stgcmt status``: what is pending, on the SCP (``--data-dir``) or SCU (``--journal``) side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stgcmt import scp, scu
from stgcmt.cli.common import at_least_one, fail, subcommand

DEFAULT_DATA_DIR = Path("stgcmt-data")
"""The SCP's default data directory (``stgcmt scp`` without ``--data-dir``)."""

EXAMPLES = """\
  stgcmt status                                   # ./stgcmt-data if it exists, else the SCU journal
  stgcmt status --data-dir ./stgcmt-data          # the SCP's transactions and instances
  stgcmt status --data-dir ./stgcmt-data --json   # for scripts
  stgcmt status --database postgresql://stgcmt@db/archive   # every node of a cluster
  stgcmt status --journal ~/.local/state/stgcmt/scu-journal.sqlite   # what send/agent await
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subcommand(subparsers, "status", "show commitment transactions and their state", EXAMPLES)
    p.add_argument("--data-dir", type=Path, help="an SCP data directory")
    p.add_argument(
        "--database",
        metavar="URL",
        help="an archive's PostgreSQL database (stgcmt scp --database): every node's work",
    )
    p.add_argument("--journal", type=Path, metavar="FILE", help="an SCU journal (stgcmt send)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--limit", type=at_least_one, default=50, help="transactions listed (default 50)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.data_dir is not None and args.journal is not None:
        return fail(args, "give --data-dir or --journal, not both")
    if args.database is not None and args.journal is not None:
        return fail(args, "give --database or --journal, not both")
    if args.data_dir is None and args.journal is None and args.database is None:
        # The defaults: the SCP's ./stgcmt-data when it is there, else the SCU journal.
        if (DEFAULT_DATA_DIR / "commitment.sqlite").exists():
            args.data_dir = DEFAULT_DATA_DIR
        elif scu.default_journal_path().exists():
            args.journal = scu.default_journal_path()
        else:
            return fail(
                args,
                f"no SCP data dir ./{DEFAULT_DATA_DIR} and no SCU journal"
                f" {scu.default_journal_path()}: give --data-dir or --journal",
            )
    scu_side = args.journal is not None
    try:
        if scu_side:
            status = scu.status(args.journal, args.limit)
        else:
            status = scp.status(args.data_dir, args.limit, database_url=args.database)
    except OSError as exc:  # no such database file, or the database server cannot be reached
        return fail(args, str(exc))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(scu.format_status(status) if scu_side else scp.format_status(status))
    return 0
