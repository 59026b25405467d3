"""Association negotiation (PS3.8 §7.1, PS3.7 Annex D.3.3.4), as pure functions: what a
requester proposes, what an acceptor answers, and what was agreed. No I/O, so every rule is
unit-tested without sockets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from stgcmt.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from stgcmt.ul.pdu_items import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    RoleSelectionItem,
    UserInformationItem,
)

MAX_CONTEXT_ID = 255


@dataclass(frozen=True)
class PresentationContext:
    """An accepted presentation context: what its ID stands for on this association."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


def user_information(max_pdu: int, roles: Iterable[RoleSelectionItem] = ()) -> UserInformationItem:
    return UserInformationItem(
        max_pdu, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, tuple(roles)
    )


def propose(
    contexts: Sequence[tuple[str, Sequence[str]]],
) -> tuple[PresentationContextItemRQ, ...]:
    """Presentation Context Items with odd IDs 1, 3, ... 255 (PS3.8 §9.3.2.2)."""
    if len(contexts) * 2 - 1 > MAX_CONTEXT_ID:
        raise ValueError(f"{len(contexts)} presentation contexts exceed 128")
    return tuple(
        PresentationContextItemRQ(2 * n + 1, abstract, tuple(syntaxes))
        for n, (abstract, syntaxes) in enumerate(contexts)
    )


def answer_contexts(
    proposed: Iterable[PresentationContextItemRQ], supported: Mapping[str, Sequence[str]]
) -> tuple[PresentationContextItemAC, ...]:
    """Accept each proposed context whose abstract syntax we support, with the first of *our*
    transfer syntaxes (in preference order) that the requester offered; otherwise result 3
    (abstract syntax not supported) or 4 (transfer syntaxes not supported)."""
    answers = []
    for cx in proposed:
        ours = supported.get(cx.abstract_syntax)
        chosen = next((ts for ts in ours or () if ts in cx.transfer_syntaxes), None)
        if ours is None:
            result = ABSTRACT_SYNTAX_NOT_SUPPORTED
        elif chosen is None:
            result = TRANSFER_SYNTAXES_NOT_SUPPORTED
        else:
            result = ACCEPTANCE
        answers.append(
            PresentationContextItemAC(cx.context_id, result, chosen or cx.transfer_syntaxes[0])
        )
    return tuple(answers)


def answer_roles(
    proposed: Iterable[RoleSelectionItem], negotiable: Iterable[str]
) -> tuple[RoleSelectionItem, ...]:
    """Accept the roles proposed for the SOP classes whose roles we negotiate (Storage
    Commitment: the requester may take the SCP role to deliver reports); others get no answer,
    which leaves the default roles."""
    classes = set(negotiable)
    return tuple(role for role in proposed if role.sop_class_uid in classes)


def agreed_contexts(
    proposed: Iterable[PresentationContextItemRQ], answers: Iterable[PresentationContextItemAC]
) -> dict[int, PresentationContext]:
    """The accepted contexts by ID; answers for IDs never proposed are ignored."""
    abstract = {cx.context_id: cx.abstract_syntax for cx in proposed}
    return {
        answer.context_id: PresentationContext(
            answer.context_id, abstract[answer.context_id], answer.transfer_syntax
        )
        for answer in answers
        if answer.result == ACCEPTANCE and answer.context_id in abstract
    }
