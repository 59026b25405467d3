"""Presentation context and role negotiation rules."""

from __future__ import annotations

import pytest

from stgcmt.ul.acse import (
    PresentationContext,
    agreed_contexts,
    answer_contexts,
    answer_roles,
    propose,
)
from stgcmt.ul.pdu_items import (
    PresentationContextItemAC,
    PresentationContextItemRQ,
    RoleSelectionItem,
)

COMMITMENT = "1.2.840.10008.1.20.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT, EXPLICIT, JPEG = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"
SUPPORTED = {CT: (EXPLICIT, JPEG, IMPLICIT), COMMITMENT: (IMPLICIT, EXPLICIT)}


def test_propose_numbers_contexts_odd() -> None:
    proposed = propose([(CT, (EXPLICIT,)), (COMMITMENT, (IMPLICIT, EXPLICIT))])
    assert [cx.context_id for cx in proposed] == [1, 3]
    assert len(propose([(CT, (EXPLICIT,))] * 128)) == 128
    with pytest.raises(ValueError):
        propose([(CT, (EXPLICIT,))] * 129)


def test_acceptor_prefers_its_own_order_and_rejects_with_3_or_4() -> None:
    proposed = [
        PresentationContextItemRQ(1, CT, (IMPLICIT, JPEG, EXPLICIT)),
        PresentationContextItemRQ(3, CT, (IMPLICIT,)),
        PresentationContextItemRQ(5, CT, ("1.2.3.4",)),
        PresentationContextItemRQ(7, "1.2.3.999", (IMPLICIT,)),
        PresentationContextItemRQ(9, COMMITMENT, (EXPLICIT, IMPLICIT)),
    ]
    assert answer_contexts(proposed, SUPPORTED) == (
        PresentationContextItemAC(1, 0, EXPLICIT),
        PresentationContextItemAC(3, 0, IMPLICIT),
        PresentationContextItemAC(5, 4, "1.2.3.4"),
        PresentationContextItemAC(7, 3, IMPLICIT),
        PresentationContextItemAC(9, 0, IMPLICIT),
    )


def test_roles_answered_only_for_negotiable_classes() -> None:
    scp_role = RoleSelectionItem(COMMITMENT, False, True)
    other = RoleSelectionItem(CT, True, True)
    assert answer_roles([scp_role, other], [COMMITMENT]) == (scp_role,)
    assert answer_roles([scp_role], []) == ()


def test_agreed_contexts_keep_only_accepted_and_proposed() -> None:
    proposed = propose([(CT, (EXPLICIT,)), (COMMITMENT, (IMPLICIT,))])
    answers = [
        PresentationContextItemAC(1, 0, EXPLICIT),
        PresentationContextItemAC(3, 3, IMPLICIT),
        PresentationContextItemAC(5, 0, IMPLICIT),  # never proposed
    ]
    assert agreed_contexts(proposed, answers) == {1: PresentationContext(1, CT, EXPLICIT)}
