"""The Storage Commitment SCP service: an archive that commits only what it durably holds.

What the CLI and Python callers use is here: :class:`StorageCommitmentSCP`, :func:`status` (a
read-only look at a data directory, or at a cluster's database) and the errors a data directory
or a database that cannot be used raise.

The names are loaded on first use (PEP 562 ``__getattr__``): ``stgcmt status`` reads a
database and has no use for the service, the engine and pydicom behind
:class:`StorageCommitmentSCP`, whose import is most of such a run's time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stgcmt.lazy import lazy_attributes

if TYPE_CHECKING:
    from stgcmt.scp.service import StorageCommitmentSCP
    from stgcmt.storage.backends import DatabaseUnavailable
    from stgcmt.storage.backends import scp_status as status
    from stgcmt.storage.queries import format_scp_status as format_status
    from stgcmt.storage.sqlite import StorageUnavailable

_WHERE = {
    "DatabaseUnavailable": ("stgcmt.storage.backends", "DatabaseUnavailable"),
    "StorageCommitmentSCP": ("stgcmt.scp.service", "StorageCommitmentSCP"),
    "StorageUnavailable": ("stgcmt.storage.sqlite", "StorageUnavailable"),
    "format_status": ("stgcmt.storage.queries", "format_scp_status"),
    "status": ("stgcmt.storage.backends", "scp_status"),
}
"""Each public name: the module that defines it, and its name there."""

__all__ = [
    "DatabaseUnavailable",
    "StorageCommitmentSCP",
    "StorageUnavailable",
    "format_status",
    "status",
]


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
