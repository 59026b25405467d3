"""The networking seam: the one name services import to talk DICOM.

Services (SCP, SCU, agent) see plain Python objects: :class:`Handlers` for what arrives,
:class:`Association` for what they send, :class:`Server` for listening. The engine behind them
is our own asyncio upper layer and DIMSE (``stgcmt.engine``); nothing engine-specific escapes.
"""

from __future__ import annotations

from stgcmt.ul.engine import Association, Link, Server, open_association
from stgcmt.ul.seam import (
    MAX_CONTEXTS,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    ActionRequest,
    AssociationError,
    CommitmentRole,
    ContextPlan,
    EventReport,
    Handlers,
    PeerInfo,
    Rejection,
    StoreRequest,
    is_success,
    plan_storage_associations,
)

__all__ = [
    "MAX_CONTEXTS",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "ActionRequest",
    "Association",
    "AssociationError",
    "CommitmentRole",
    "ContextPlan",
    "EventReport",
    "Handlers",
    "Link",
    "PeerInfo",
    "Rejection",
    "Server",
    "StoreRequest",
    "is_success",
    "open_association",
    "plan_storage_associations",
]
