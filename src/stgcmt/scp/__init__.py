"""The Storage Commitment SCP service: an archive that commits only what it durably holds."""

from stgcmt.scp.service import StorageCommitmentSCP

__all__ = ["StorageCommitmentSCP"]
