"""Command sets (group 0000, Implicit VR Little Endian) and message fragmentation/reassembly."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.filereader import read_dataset

from stgcmt.ul.dimse import (
    ACTION_TYPE_ID,
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    DATA_SET_PRESENT,
    EVENT_TYPE_ID,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    NO_DATA_SET,
    PRIORITY,
    REQUESTED_SOP_CLASS_UID,
    REQUESTED_SOP_INSTANCE_UID,
    STATUS,
    CommandField,
    Message,
    MessageAssembler,
    decode_command_set,
    encode_command_set,
    fragments,
    response_to,
)
from stgcmt.ul.pdu import P_DATA_TF
from stgcmt.ul.pdu_items import PDUError, PresentationDataValueItem
from stgcmt.ul.pdu_reader import PDUReader

COMMITMENT, INSTANCE = "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1"
C_STORE_RQ = {
    AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.1.7",
    COMMAND_FIELD: CommandField.C_STORE_RQ,
    MESSAGE_ID: 7,
    PRIORITY: 0,
    COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
    AFFECTED_SOP_INSTANCE_UID: "1.2.3.456",  # odd length: padded with NUL
}
N_ACTION_RQ = {
    REQUESTED_SOP_CLASS_UID: COMMITMENT,
    COMMAND_FIELD: CommandField.N_ACTION_RQ,
    MESSAGE_ID: 65535,
    COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
    REQUESTED_SOP_INSTANCE_UID: INSTANCE,
    ACTION_TYPE_ID: 1,
}
N_EVENT_REPORT_RQ = {
    AFFECTED_SOP_CLASS_UID: COMMITMENT,
    COMMAND_FIELD: CommandField.N_EVENT_REPORT_RQ,
    MESSAGE_ID: 2,
    COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
    AFFECTED_SOP_INSTANCE_UID: INSTANCE,
    EVENT_TYPE_ID: 2,
}


@pytest.mark.parametrize("command", [C_STORE_RQ, N_ACTION_RQ, N_EVENT_REPORT_RQ])
def test_command_set_round_trip(command) -> None:
    assert decode_command_set(encode_command_set(command)) == {0: _group_length(command), **command}


def _group_length(command) -> int:
    return len(encode_command_set(command)) - 12


def test_encoding_is_what_pydicom_reads() -> None:
    encoded = encode_command_set(C_STORE_RQ)
    ds = read_dataset(BytesIO(encoded), True, True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert ds.AffectedSOPInstanceUID == "1.2.3.456"
    assert ds.CommandField == 1 and ds.MessageID == 7 and ds.CommandDataSetType == 1
    assert encoded.index(b"1.2.3.456\0") > 0


def test_responses_echo_the_request() -> None:
    assert response_to(N_ACTION_RQ, 0x0112) == {
        COMMAND_FIELD: 0x8130,
        MESSAGE_ID_BEING_RESPONDED_TO: 65535,
        COMMAND_DATA_SET_TYPE: NO_DATA_SET,
        STATUS: 0x0112,
        AFFECTED_SOP_CLASS_UID: COMMITMENT,
        AFFECTED_SOP_INSTANCE_UID: INSTANCE,
        ACTION_TYPE_ID: 1,
    }
    report_rsp = response_to(N_EVENT_REPORT_RQ, 0, with_data_set=True)
    assert report_rsp[EVENT_TYPE_ID] == 2 and report_rsp[COMMAND_DATA_SET_TYPE] != NO_DATA_SET
    store_rsp = decode_command_set(encode_command_set(response_to(C_STORE_RQ, 0xA700)))
    assert store_rsp[STATUS] == 0xA700 and store_rsp[AFFECTED_SOP_INSTANCE_UID] == "1.2.3.456"


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x01\x02",  # truncated element header
        bytes.fromhex("0800 1000 04000000") + b"abcd",  # not group 0000
        bytes.fromhex("0000 0001 08000000") + b"ab",  # value overruns
        encode_command_set({AFFECTED_SOP_CLASS_UID: "1.2"})[12:],  # no Command Field
    ],
)
def test_malformed_command_sets_raise(data: bytes) -> None:
    with pytest.raises(PDUError):
        decode_command_set(data)


def _reassemble(stream: bytes) -> list[Message]:
    assembler, messages = MessageAssembler(), []
    for _, body in PDUReader().feed(stream):
        for pdv in P_DATA_TF.decode(body).items:
            message = assembler.feed(pdv)
            if message is not None:
                messages.append(message)
    return messages


@pytest.mark.parametrize("max_pdu", [0, 16, 64, 1000, 16384])
@pytest.mark.parametrize("chunks", [[b"x" * 5000], [b"ab" * 10, b"c" * 333, b"d"]])
def test_fragmentation_respects_max_pdu_and_reassembles(max_pdu: int, chunks) -> None:
    command = encode_command_set(C_STORE_RQ)
    pieces = list(fragments(3, command, chunks, max_pdu))
    stream = b"".join(pieces)

    pdus = list(PDUReader().feed(stream))
    if max_pdu:
        assert all(len(body) <= max_pdu for _, body in pdus)
    [message] = _reassemble(stream)
    assert message.context_id == 3
    assert message.command[AFFECTED_SOP_INSTANCE_UID] == "1.2.3.456"
    assert message.data_set == b"".join(chunks)


def test_message_without_data_set_completes_with_its_command() -> None:
    command = encode_command_set(response_to(C_STORE_RQ, 0))
    [message] = _reassemble(b"".join(fragments(1, command, (), 16)))
    assert message.data_set is None and message.command_field == 0x8001


def test_several_messages_in_a_row() -> None:
    first = b"".join(fragments(1, encode_command_set(C_STORE_RQ), [b"1" * 100], 40))
    second = b"".join(fragments(1, encode_command_set(N_ACTION_RQ), [b"2" * 10], 0))
    messages = _reassemble(first + second)
    assert [m.data_set for m in messages] == [b"1" * 100, b"2" * 10]


def test_data_set_fragment_without_command_is_an_error() -> None:
    with pytest.raises(PDUError):
        MessageAssembler().feed(PresentationDataValueItem(1, 0x02, b"data"))


def test_command_fragment_inside_a_data_set_is_an_error() -> None:
    assembler = MessageAssembler()
    assembler.feed(PresentationDataValueItem(1, 0x03, encode_command_set(C_STORE_RQ)))
    with pytest.raises(PDUError):
        assembler.feed(PresentationDataValueItem(1, 0x03, encode_command_set(C_STORE_RQ)))


def test_max_pdu_too_small_for_any_data() -> None:
    with pytest.raises(ValueError):
        list(fragments(1, b"abc", (), 6))
