"""Fuzzing the SCP's inputs (hypothesis): N-ACTION Action Information and C-STORE datasets.

Every example must get a DICOM status, the server must keep serving, and nothing already stored
may be harmed. Malformed bytes are put on the wire by letting pynetdicom "encode" a dataset to
bytes we choose, so the test goes through a real association like any broken peer would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import association as pynetdicom_association

from stgcmt.config import ScpConfig
from stgcmt.dicom.uids import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH_MODEL
from stgcmt.scp.service import StorageCommitmentSCP
from stgcmt.storage.instances import sha256_of
from stgcmt.storage.queries import SqliteScpQueries

from support.common import (
    FAST_RETRY,
    LOCALHOST,
    SECONDARY_CAPTURE,
    free_port,
    remote,
    write_instances,
)

N_ACTION_STATUSES = {0x0000, 0x0110, 0x0115, 0x0212, 0x0213}
C_STORE_STATUSES = {0x0000, 0xC000, 0x0110, 0xA900}
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


class RawBytes(Dataset):
    """A 'dataset' that goes on the wire as exactly these bytes."""

    def __init__(self, raw: bytes, **attributes: str) -> None:
        super().__init__()
        for keyword, value in attributes.items():
            setattr(self, keyword, value)
        self.raw = raw


@pytest.fixture(scope="module", autouse=True)
def raw_encoding():
    original = pynetdicom_association.encode

    def encode(ds, *args, **kwargs):
        return ds.raw if isinstance(ds, RawBytes) else original(ds, *args, **kwargs)

    pynetdicom_association.encode = encode
    yield
    pynetdicom_association.encode = original


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz-archive")
    config = ScpConfig(
        bind=LOCALHOST,
        port=0,
        data_dir=data / "scp",
        remotes=(remote("FUZZER", free_port()),),
        retry=FAST_RETRY,
        max_references=200,
    )
    scp = StorageCommitmentSCP(config).start()
    seed = write_instances(data / "seed", 3)
    yield scp, seed
    scp.stop()


@pytest.fixture(scope="module")
def association(archive):
    scp, seed = archive
    ae = AE("FUZZER")
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(LOCALHOST, scp.port, ae_title="STGCMT_SCP")
    assert assoc.is_established
    # pynetdicom's requester reactor can take a response meant for a waiting send_*() call
    # (upstream #875); on one association shared by 1,200 examples that eventually happens.
    # The archive never sends requests here, so hand every message to the waiting call.
    assoc._serve_request = lambda msg, context_id: assoc.dimse.msg_queue.put((context_id, msg))
    for path in seed:
        assert assoc.send_c_store(dcmread(path)).Status == 0
    checksums = {p.stem: sha256_of(scp.store.path_for(p.stem)) for p in seed}
    yield assoc, checksums
    assoc.release()


def _still_serving_and_intact(scp: StorageCommitmentSCP, assoc, checksums: dict[str, str]):
    assert assoc.is_established, "the SCP dropped the association"
    assert assoc.send_c_echo().Status == 0
    for uid, digest in checksums.items():
        assert sha256_of(scp.store.path_for(uid)) == digest


uids = st.one_of(
    st.from_regex(r"1\.2\.[1-9][0-9]{0,5}\.[0-9]{1,5}", fullmatch=True),
    st.sampled_from(["1.2.3", "1.2.3.4", "1.2.840.10008.1.20.1.1"]),  # duplicates likely
    st.text(max_size=70),
    st.just(""),
)


@st.composite
def action_information(draw) -> Dataset:
    ds = Dataset()
    if draw(st.booleans()):
        ds.TransactionUID = draw(uids)
    if draw(st.integers(0, 9)):
        items = []
        for _ in range(draw(st.integers(0, 6))):
            item = Dataset()
            if draw(st.integers(0, 7)):
                item.ReferencedSOPClassUID = (
                    draw(st.sampled_from([SECONDARY_CAPTURE]))
                    if draw(st.booleans())
                    else draw(uids)
                )
            if draw(st.integers(0, 7)):
                item.ReferencedSOPInstanceUID = draw(uids)
            items.append(item)
        if draw(st.integers(0, 20)) == 0:
            items = items * 50  # huge: beyond max_references
        ds.ReferencedSOPSequence = items
    if draw(st.booleans()):
        ds.PatientID = draw(st.text(max_size=20))  # stray attributes are ignored
    return ds


@FUZZ
@given(information=action_information())
def test_fuzzed_action_information_structure(archive, association, information):
    scp, _ = archive
    assoc, checksums = association
    # An empty dataset would make pynetdicom announce a data set and send none; send no
    # Action Information instead.
    try:
        status, _ = assoc.send_n_action(
            information or None, 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
        )
    except (ValueError, TypeError, OverflowError):
        return  # pydicom cannot even encode it: nothing reached the wire
    assert int(status.Status) in N_ACTION_STATUSES
    _still_serving_and_intact(scp, assoc, checksums)


@FUZZ
@given(raw=st.binary(min_size=1, max_size=300))
def test_fuzzed_action_information_bytes(archive, association, raw):
    scp, _ = archive
    assoc, checksums = association
    status, _ = assoc.send_n_action(
        RawBytes(raw), 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
    )
    assert int(status.Status) in N_ACTION_STATUSES
    _still_serving_and_intact(scp, assoc, checksums)


def _truncations(seed: list[Path]) -> st.SearchStrategy[bytes]:
    """Real datasets cut short or with bytes flipped, and plain noise."""
    bodies = [p.read_bytes()[132:] for p in seed]  # skip preamble; meta is harmless noise
    mutated = st.tuples(st.sampled_from(bodies), st.integers(0, 400), st.binary(max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2]
    )
    return st.one_of(mutated, st.binary(min_size=1, max_size=400)).filter(bool)


@FUZZ
@given(data=st.data())
def test_fuzzed_c_store_datasets(archive, association, data):
    scp, seed = archive
    assoc, checksums = association
    raw = data.draw(_truncations(seed))
    uid = data.draw(st.sampled_from([f"1.2.999.{len(raw)}", *checksums]))  # new, or overwrite try
    dataset = RawBytes(raw, SOPClassUID=SECONDARY_CAPTURE, SOPInstanceUID=uid)
    dataset.file_meta = Dataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rsp = assoc.send_c_store(dataset)
    assert int(rsp.Status) in C_STORE_STATUSES
    _still_serving_and_intact(scp, assoc, checksums)


def test_after_fuzzing_the_index_and_journal_are_sound(archive, association):
    scp, _ = archive
    assert SqliteScpQueries(scp.config.data_dir).integrity_problems() == []
