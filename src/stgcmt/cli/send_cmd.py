"""``stgcmt send``: store files, request commitment, release local copies once committed."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from stgcmt.cli.common import (
    EXIT_USAGE,
    add_logging_flags,
    add_tls_flags,
    ae_title,
    port_number,
    subcommand,
    tls_config,
)
from stgcmt.cli.scu_config import add_scu_config_flags, apply_scu_config
from stgcmt.config import ConfigError
from stgcmt.logs import setup_logging
from stgcmt.scu import (
    COMMITTED,
    DEFAULT_AET,
    DEFAULT_LISTEN_BIND,
    REPORT_WAIT_CHOICES,
    Reporter,
    ScuJournal,
    SendOptions,
    SendResult,
    UsageError,
    default_journal_path,
)

if TYPE_CHECKING:
    from stgcmt.scu.send import StageCallback

log = logging.getLogger("stgcmt.cli")

EXAMPLES = """\
  stgcmt send ARCHIVE@pacs:11112 ./outbox --aet CT1 --listen 11113 --delete-committed
  stgcmt send ARCHIVE@pacs:11112 study1/ study2/ --aet CT1 --report-assoc same --per-study
  stgcmt send ARCHIVE@pacs:11112 ./outbox --aet CT1 --move-committed ./sent --json
  stgcmt send ARCHIVE@pacs:11112 ./outbox --aet CT1 --listen 11113 --reporter ARCHIVE@pacs2
      # the archive reports from another node (pacs2), or: --reporter ARCHIVE_RPT@pacs
  stgcmt send ARCHIVE@pacs:11112 ./outbox --aet CT1 -xi
      # an old archive that takes Implicit VR Little Endian only: propose (and send) just that

Transfer syntaxes: by default each SOP Class is proposed in each file's own syntax (sent as
it is when accepted) and, for uncompressed files, also in Explicit and Implicit VR Little
Endian (the file is transcoded on the fly when only those are accepted). -xi / -xe propose
uncompressed files only in Implicit / Explicit VR Little Endian; -xf only in their own syntax.
Compressed files (JPEG, ...) always go in their own syntax: stgcmt does not decompress, and a
file whose syntax the archive refuses fails (kept, exit 1).

Only the archive sent to (its AE title, from an address its host name resolves to) may
report on a new association, unless --reporter names others; anyone else is rejected
(A-ASSOCIATE-RJ "calling AE title not recognised") and logged with "security:", except
that an association proposing only Verification is accepted from anyone (C-ECHO only).

exit status: 0 all committed, 1 some failed (kept), 2 report not received in time
(pending in the journal; 'stgcmt agent' can receive it later), 3 usage or connection error.
"""


def add_journal_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--journal",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"SCU journal (default {default_journal_path()})",
    )


def reporter(text: str) -> Reporter:
    try:
        return Reporter.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_reporter_flag(parser: argparse.ArgumentParser) -> None:
    """``--reporter``: shared by send and agent, which must trust the same reporters."""
    parser.add_argument(
        "--reporter",
        type=reporter,
        action="append",
        default=[],
        metavar="AET@HOST",
        help="also accept reports on new associations from this AE title at this host"
        " (repeatable; a :PORT is ignored). Default: only the archive sent to",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subcommand(subparsers, "send", "send files and request Storage Commitment (SCU)", EXAMPLES)
    p.add_argument(
        "archive",
        metavar="ARCHIVE",
        help="a configured archive's name (--config) or ARCHIVE_AET@HOST:PORT",
    )
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--aet", type=ae_title, default=None, help=f"our AE title ({DEFAULT_AET})")
    p.add_argument(
        "--listen", type=port_number, metavar="PORT", help="listen for reports on a new assoc."
    )
    p.add_argument(
        "--listen-bind",
        default=None,
        metavar="HOST",
        help=f"listener address (default {DEFAULT_LISTEN_BIND}: the archive must reach it)",
    )
    p.add_argument(
        "--report-assoc",
        choices=REPORT_WAIT_CHOICES,
        default="any",
        help="where a report is accepted: new association, the sending one, or any (default)",
    )
    p.add_argument(
        "--same-assoc-wait",
        type=float,
        metavar="S",
        help="keep the sending association open S s for a report (default: --timeout with"
        " 'same', 10 with 'any')",
    )
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="wait for reports")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--delete-committed", action="store_true", help="delete committed files")
    action.add_argument("--move-committed", type=Path, metavar="DIR", help="move them to DIR")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--per-study", action="store_true", help="one transaction per study")
    split.add_argument("--per-series", action="store_true", help="one transaction per series")
    p.add_argument("--max-refs", type=int, metavar="N", help="at most N files per transaction")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    propose = p.add_mutually_exclusive_group()
    propose.add_argument(
        "-xi",
        "--propose-implicit",
        dest="propose",
        action="store_const",
        const="implicit",
        help="propose only Implicit VR Little Endian (uncompressed files transcoded to it)",
    )
    propose.add_argument(
        "-xe",
        "--propose-explicit",
        dest="propose",
        action="store_const",
        const="explicit",
        help="propose only Explicit VR Little Endian (uncompressed files transcoded to it)",
    )
    propose.add_argument(
        "-xf",
        "--propose-file",
        dest="propose",
        action="store_const",
        const="file",
        help="propose each file's own transfer syntax only (never transcode)",
    )
    p.set_defaults(propose="negotiate")
    add_reporter_flag(p)
    add_journal_flag(p)
    add_tls_flags(p)
    add_scu_config_flags(p)
    add_logging_flags(p)
    p.set_defaults(run=run)


def options_from(args: argparse.Namespace) -> SendOptions:
    return SendOptions(
        aet=args.aet,
        report_assoc=args.report_assoc,
        same_assoc_wait=args.same_assoc_wait,
        timeout=args.timeout,
        on_commit="delete" if args.delete_committed else "move" if args.move_committed else "keep",
        move_dir=args.move_committed,
        group_by="study" if args.per_study else "series" if args.per_series else None,
        max_refs=args.max_refs,
        listen_port=args.listen,
        listen_bind=args.listen_bind,
        timeouts=args.timeouts,
        max_pdu=args.max_pdu,
        tls=tls_config(args),
        reporters=tuple(args.reporter),
        propose=args.propose,
    )


def run(args: argparse.Namespace) -> int:
    # The engine (and pydicom behind it) only once there is something to send: not for --help.
    from stgcmt.scu import AssociationError, send
    from stgcmt.scu.send import partial_result

    setup_logging(args.verbose, args.log_file)
    if (error := apply_scu_config(args, archive=True)) is not None:
        return error
    args.listen = args.listen if args.listen is not None else args.scu_config.listen_port
    args.listen_bind = args.listen_bind or args.scu_config.listen_bind or DEFAULT_LISTEN_BIND
    journal_path = args.journal or default_journal_path()
    try:
        options = options_from(args).checked()
        journal = ScuJournal(journal_path)
    except UsageError as exc:
        return _error(args, str(exc), journal_path)
    except OSError as exc:  # StorageUnavailable names the path: refuse before sending
        return _error(args, f"cannot open the journal: {exc}; nothing sent", journal_path)
    try:
        with _progress(enabled=not args.json and sys.stderr.isatty()) as progress:
            result = send(args.archive, args.paths, journal, options, stage=progress)
    except UsageError as exc:
        return _error(args, str(exc), journal_path)
    except (AssociationError, OSError) as exc:
        message = f"{exc}; no local file was deleted"
        return _error(args, message, journal_path, partial_result(exc))
    finally:
        journal.close()
    print(json.dumps(result.to_json(), indent=2) if args.json else summary(result, args.verbose))
    return result.exit_status


def _error(
    args: argparse.Namespace, message: str, journal: Path, partial: SendResult | None = None
) -> int:
    """A usage or connection error (exit 3): logged, and with ``--json`` the result object
    with its ``error`` (and what the journal recorded of the run, if it had begun)."""
    log.error("%s", message)
    if args.json:
        result = partial or SendResult(str(journal), [], [])
        result.error = message
        print(json.dumps(result.to_json(), indent=2))
    elif partial is not None and partial.transactions:
        print(summary(partial, args.verbose))
    return EXIT_USAGE


_STAGES = {"scanning": "scanning", "storing": "C-STORE", "waiting": "waiting for reports"}


@contextmanager
def _progress(enabled: bool) -> Iterator[StageCallback | None]:
    """A progress bar on stderr, only for a person watching: "scanning" while the headers are
    read, "C-STORE n/N", "waiting for reports k/T", "done k/T". Each change of stage is drawn
    at once."""
    if not enabled:
        yield None
        return
    from rich.console import Console  # a person is watching: worth its start-up time
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting", total=None)
        shown = [""]

        def update(stage: str, done: int, total: int | None) -> None:
            words = _STAGES.get(stage, stage)
            text = words if total is None else f"{words} {done}/{total}"
            bar.update(task, description=text, completed=done, total=total)
            if stage != shown[0]:
                shown[0] = stage
                bar.refresh()

        yield update


_EXIT_WORDS = {
    0: "all committed",
    1: "some files were not committed (kept)",
    2: "report not received in time, or delete/move still due (pending in the journal)",
    3: "error",
}
SHOWN = 5
"""Files not committed listed per transaction without -v (with their reasons)."""


def summary(result: SendResult, verbose: int = 0) -> str:
    """Per transaction: its state, its files by state, the first few files not committed with
    their reasons (every file with -v); then skipped files, totals and hints."""
    lines = []
    for tx in result.transactions:
        error = f" ({tx.error})" if tx.error and tx.state != COMMITTED else ""
        by_state: dict[str, int] = {}
        for f in tx.files:
            by_state[f.state] = by_state.get(f.state, 0) + 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
        lines.append(
            f"transaction {tx.transaction_uid} (#{tx.journal_id}): {tx.state},"
            f" {len(tx.files)} files: {counts}{error}"
        )
        listed = [f for f in tx.files if f.state != COMMITTED or verbose]
        shown = listed if verbose else listed[:SHOWN]
        for f in shown:
            detail = f.reason or f.action_note or ""
            lines.append(f"  {f.state:<12} {f.path}  {detail}".rstrip())
        if len(listed) > len(shown):
            lines.append(f"  ... and {len(listed) - len(shown)} more (-v lists every file)")
    for skipped in result.skipped:
        lines.append(f"  {'skipped':<12} {skipped.path}  {skipped.reason}")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts().items()))
    actions = result.actions()
    acted = f"{actions.get('done', 0)} deleted/moved"
    if actions.get("due"):
        acted += f", {actions['due']} delete/move still due"
    if actions.get("skipped"):
        acted += f", {actions['skipped']} kept (changed after sending)"
    lines.append(f"files: {counts}; {acted}; journal {result.journal}")
    lines.extend(f"note: {note}" for note in result.notes)
    lines.append(f"result: {_EXIT_WORDS[result.exit_status]} (exit {result.exit_status})")
    return "\n".join(lines)
