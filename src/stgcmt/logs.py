"""Logging set-up shared by every command: one line per event, timestamps, logger names."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(verbose: int = 0, log_file: Path | None = None) -> None:
    """``-v`` shows per-instance detail from the services, ``-vv`` adds the networking
    engine's own debug (association and PDU detail)."""
    level = logging.DEBUG if verbose else logging.INFO
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    logging.getLogger("stgcmt.engine").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
