"""The Storage Commitment SCP service: an archive that commits only what it durably holds.

What the CLI and Python callers use is here: :class:`StorageCommitmentSCP`, :func:`status` (a
read-only look at a data directory, or at a cluster's database) and the errors a data directory
or a database that cannot be used raise."""

from stgcmt.scp.service import StorageCommitmentSCP
from stgcmt.storage.backends import DatabaseUnavailable
from stgcmt.storage.backends import scp_status as status
from stgcmt.storage.queries import format_scp_status as format_status
from stgcmt.storage.sqlite import StorageUnavailable

__all__ = [
    "DatabaseUnavailable",
    "StorageCommitmentSCP",
    "StorageUnavailable",
    "format_status",
    "status",
]
