"""The send scan reads a file's head, not the whole file: what it finds must be what is in the
file wherever the identifying attributes lie, in every syntax the scan may meet."""

from __future__ import annotations

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from stgcmt.scu.dicomfiles import HEAD, LocalFile, Skipped, read_file

from support.common import make_dataset


def test_uids_after_a_large_element_are_found_beyond_the_head(tmp_path):
    ds = make_dataset(study="1.2.3.4", series="1.2.3.4.5", pixel_bytes=4 * HEAD)
    block = ds.private_block(0x0009, "STGCMT TEST", create=True)
    block.add_new(0x01, "OB", b"\x01" * (2 * HEAD))  # (0009,xx01): before Study Instance UID
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)

    found = read_file(path, path.name)

    assert isinstance(found, LocalFile)
    assert (found.study_uid, found.series_uid) == ("1.2.3.4", "1.2.3.4.5")
    assert found.sop_instance_uid == ds.SOPInstanceUID


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_other_syntaxes_are_identified(tmp_path, syntax):
    ds = make_dataset(study="1.2.9", series="1.2.9.1", pixel_bytes=2 * HEAD)
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "other.dcm"
    ds.save_as(path, enforce_file_format=True)

    found = read_file(path, path.name)

    assert isinstance(found, LocalFile)
    assert (found.transfer_syntax, found.study_uid) == (syntax, "1.2.9")
    assert found.sop_class_uid == ds.SOPClassUID


def test_a_file_cut_inside_its_head_is_skipped_with_why(tmp_path):
    ds = make_dataset(pixel_bytes=64)
    path = tmp_path / "cut.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(ds.SOPInstanceUID.encode(), 200) + 4])

    found = read_file(path, path.name)

    assert isinstance(found, Skipped)
    assert found.reason.startswith("cannot parse: ")
