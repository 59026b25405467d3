"""UIDs: the well-known ones stgcmt uses, stgcmt's own implementation identity, and the
PS3.5 §9.1 syntax check every UID from a peer goes through."""

from __future__ import annotations

import re

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
"""Storage Commitment Push Model SOP Class UID."""

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
"""Well-known SOP Instance UID of the Storage Commitment Push Model."""

VERIFICATION = "1.2.840.10008.1.1"

# Transfer syntaxes (PS3.5 §10) the hand-written readers tell apart.
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.7883.1.10"
"""stgcmt's Implementation Class UID, in A-ASSOCIATE PDUs and in the File Meta of stored files."""
IMPLEMENTATION_VERSION_NAME = "STGCMT_010"

_UID = re.compile(r"(?:0|[1-9][0-9]*+)(?:\.(?:0|[1-9][0-9]*+))++")
"""Possessive quantifiers: no backtracking, it is checked 200,000 times for a large request."""


def is_valid_uid(value: object) -> bool:
    """A UID per PS3.5 9.1: dotted numeric components, no leading zeros, at most 64 chars."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def new_transaction_uid() -> str:
    """A fresh UID under pydicom's root; pydicom imported here, on first use, not by every
    command that only needs a constant of this module."""
    from pydicom.uid import generate_uid

    return str(generate_uid())
