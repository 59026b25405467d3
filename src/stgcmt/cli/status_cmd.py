"""``stgcmt status``: what is pending, on the SCP (``--data-dir``) or SCU (``--journal``) side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..status import format_scp_status, scp_status
from .common import EXIT_USAGE, subcommand

EXAMPLES = """\
  stgcmt status --data-dir ./stgcmt-data          # the SCP's transactions and instances
  stgcmt status --data-dir ./stgcmt-data --json   # for scripts
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subcommand(subparsers, "status", "show commitment transactions and their state", EXAMPLES)
    p.add_argument("--data-dir", type=Path, help="an SCP data directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=50, help="transactions listed (default 50)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.data_dir is None:
        print("stgcmt status: give --data-dir", file=sys.stderr)
        return EXIT_USAGE
    try:
        status = scp_status(args.data_dir, args.limit)
    except FileNotFoundError as exc:
        print(f"stgcmt status: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(status, indent=2) if args.json else format_scp_status(status))
    return 0
