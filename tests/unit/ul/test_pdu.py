"""Every PDU type encodes and decodes to itself; malformed bytes raise PDUError; a PDU from
pynetdicom decodes with ours and ours with pynetdicom's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pynetdicom import pdu as pynetdicom_pdu
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from stgcmt.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
    PDU,
    decode_pdu,
)
from stgcmt.ul.pdu_items import (
    PDUError,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    RoleSelectionItem,
    UserInformationItem,
)
from stgcmt.ul.pdu_reader import PDUReader

COMMITMENT = "1.2.840.10008.1.20.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"

USER_INFORMATION = UserInformationItem(
    16384, "1.2.3.4", "STGCMT_010", (RoleSelectionItem(COMMITMENT, False, True),)
)
RQ = A_ASSOCIATE_RQ(
    "STGCMT_SCP",
    "MODALITY",
    (
        PresentationContextItemRQ(1, SECONDARY_CAPTURE, (EXPLICIT, IMPLICIT)),
        PresentationContextItemRQ(3, COMMITMENT, (IMPLICIT,)),
    ),
    USER_INFORMATION,
)
AC = A_ASSOCIATE_AC(
    "STGCMT_SCP",
    "MODALITY",
    (PresentationContextItemAC(1, 0, EXPLICIT), PresentationContextItemAC(3, 3, IMPLICIT)),
    UserInformationItem(0, "1.2.3.5", "", (RoleSelectionItem(COMMITMENT, False, True),)),
)


def only_pdu(data: bytes) -> PDU:
    [(pdu_type, body)] = list(PDUReader().feed(data))
    return decode_pdu(pdu_type, body)


@pytest.mark.parametrize(
    "pdu",
    [RQ, AC, A_ASSOCIATE_RJ(1, 1, 3), A_ASSOCIATE_RJ(2, 3, 2), A_RELEASE_RQ(), A_RELEASE_RP()]
    + [A_ABORT(), A_ABORT(2, 6)],
    ids=lambda pdu: type(pdu).__name__,
)
def test_round_trip(pdu: PDU) -> None:
    assert only_pdu(pdu.encode()) == pdu


def test_p_data_tf_with_several_pdvs() -> None:
    pdvs = (
        PresentationDataValueItem(1, 0x03, b"command"),
        PresentationDataValueItem(1, 0x00, b"first half"),
        PresentationDataValueItem(1, 0x02, b"last"),
    )
    decoded = only_pdu(P_DATA_TF(pdvs).encode())
    assert isinstance(decoded, P_DATA_TF)
    assert [(p.context_id, p.message_control_header, bytes(p.data)) for p in decoded.items] == [
        (1, 0x03, b"command"),
        (1, 0x00, b"first half"),
        (1, 0x02, b"last"),
    ]
    assert [(p.is_command, p.is_last) for p in decoded.items] == [
        (True, True),
        (False, False),
        (False, True),
    ]


def test_wire_format_of_fixed_pdus() -> None:
    assert A_ABORT(2, 6).encode() == bytes.fromhex("07 00 00000004 00 00 02 06")
    assert A_ASSOCIATE_RJ(1, 1, 7).encode() == bytes.fromhex("03 00 00000004 00 01 01 07")
    assert A_RELEASE_RQ().encode() == bytes.fromhex("05 00 00000004 00000000")
    header = RQ.encode()[:10]
    assert header[0] == 0x01 and header[6:8] == b"\x00\x01"  # protocol version 1
    assert RQ.encode()[10:26] == b"STGCMT_SCP      "  # Called AE title, space padded


def test_unknown_user_information_sub_items_are_skipped() -> None:
    async_ops_window = bytes.fromhex("53 00 0004 0001 0001")
    body = bytearray(RQ.encode()[6:])
    user_info_at = body.rindex(b"\x50\x00")
    body += async_ops_window
    length = int.from_bytes(body[user_info_at + 2 : user_info_at + 4], "big")
    body[user_info_at + 2 : user_info_at + 4] = (length + len(async_ops_window)).to_bytes(2, "big")
    assert A_ASSOCIATE_RQ.decode(bytes(body)) == RQ


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=20))
def test_reader_cuts_a_stream_split_anywhere(cuts: list[int]) -> None:
    stream = RQ.encode() + P_DATA_TF((PresentationDataValueItem(1, 3, b"x" * 300),)).encode()
    stream += A_RELEASE_RQ().encode()
    reader, received, offset = PDUReader(), [], 0
    for cut in [*cuts, len(stream)]:
        received += [decode_pdu(t, b) for t, b in reader.feed(stream[offset : offset + cut])]
        offset += cut
    assert [type(p) for p in received] == [A_ASSOCIATE_RQ, P_DATA_TF, A_RELEASE_RQ]
    assert received[0] == RQ


MALFORMED = {
    "unknown PDU type": (0x09, b"\0\0\0\0"),
    "truncated A-ASSOCIATE-RQ": (0x01, b"\x00\x01" + b" " * 20),
    "item overruns its PDU": (0x01, RQ.encode()[6:-4]),
    "RJ of 3 bytes": (0x03, b"\0\1\1"),
    "release RQ of 5 bytes": (0x05, b"\0" * 5),
    "abort of 2 bytes": (0x07, b"\0\0"),
    "empty P-DATA-TF": (0x04, b""),
    "PDV overruns": (0x04, bytes.fromhex("00000010 01 03") + b"abc"),
    "PDV shorter than its header": (0x04, bytes.fromhex("00000001 01")),
    "non-ASCII AE title": (0x01, RQ.encode()[6:10] + b"\xff" * 16 + RQ.encode()[26:]),
    "context without transfer syntax": (
        0x01,
        RQ.encode()[6:74] + PresentationContextItemRQ(1, "1.2", ()).encode(),
    ),
}


@pytest.mark.parametrize("pdu_type, body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_pdus_raise_pdu_error(pdu_type: int, body: bytes) -> None:
    with pytest.raises(PDUError):
        decode_pdu(pdu_type, body)


def test_role_selection_item_of_wrong_length() -> None:
    with pytest.raises(PDUError):
        RoleSelectionItem.decode(memoryview(bytes.fromhex("0005 312e322e33 01")))


def test_pynetdicom_request_decodes_with_ours() -> None:
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "MODALITY"
    primitive.called_ae_title = "STGCMT_SCP"
    context = build_context(COMMITMENT, [IMPLICIT, EXPLICIT])
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 32768
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid, role.scu_role, role.scp_role = COMMITMENT, False, True
    primitive.user_information = [max_length, role]
    theirs = pynetdicom_pdu.A_ASSOCIATE_RQ()
    theirs.from_primitive(primitive)

    ours = only_pdu(theirs.encode())

    assert isinstance(ours, A_ASSOCIATE_RQ)
    assert (ours.called_ae_title, ours.calling_ae_title) == ("STGCMT_SCP", "MODALITY")
    assert ours.presentation_contexts == (
        PresentationContextItemRQ(1, COMMITMENT, (IMPLICIT, EXPLICIT)),
    )
    assert ours.user_information.maximum_length == 32768
    assert ours.user_information.role_selection == (RoleSelectionItem(COMMITMENT, False, True),)


def test_our_accept_decodes_with_pynetdicom() -> None:
    theirs = pynetdicom_pdu.A_ASSOCIATE_AC()
    theirs.decode(AC.encode())
    primitive = theirs.to_primitive()
    results = [
        (cx.context_id, cx.result) for cx in primitive.presentation_context_definition_results_list
    ]
    assert results == [(1, 0), (3, 3)]
    roles = [
        i for i in primitive.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)
    ]
    assert [(r.sop_class_uid, r.scu_role, r.scp_role) for r in roles] == [(COMMITMENT, False, True)]
