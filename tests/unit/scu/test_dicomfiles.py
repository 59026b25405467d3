"""Finding, reading and grouping local DICOM files."""

from __future__ import annotations

from stgcmt.scu.dicomfiles import scan, split

from support.common import make_dataset, write_instances


def test_scan_walks_folders_and_skips_what_cannot_be_sent(tmp_path):
    good = write_instances(tmp_path / "in" / "sub", 2)
    (tmp_path / "in" / "notes.txt").write_text("hello")
    (tmp_path / "in" / "empty.dcm").write_bytes(b"")
    copy = tmp_path / "in" / "zz" / "copy.dcm"  # walked after sub/
    copy.parent.mkdir()
    copy.write_bytes(good[0].read_bytes())

    result = scan([tmp_path / "in"])

    assert sorted(f.path for f in result.files) == sorted(good)
    assert {f.relpath for f in result.files} == {f"sub/{p.name}" for p in good}
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert reasons["notes.txt"] == "not a DICOM Part 10 file"
    assert "empty.dcm" in reasons
    assert reasons["copy.dcm"].startswith("same SOP Instance UID as")


def test_a_file_argument_is_its_own_relpath(tmp_path):
    path = write_instances(tmp_path, 1)[0]
    assert scan([path]).files[0].relpath == path.name


def test_split_by_series_and_max_refs(tmp_path):
    for series, count in (("1.2.1", 3), ("1.2.2", 1)):
        write_instances(tmp_path / series, count, series=series)
    files = scan([tmp_path]).files

    assert [len(g) for g in split(files)] == [4]
    assert [len(g) for g in split(files, "series")] == [3, 1]
    assert [len(g) for g in split(files, "series", max_refs=2)] == [2, 1, 1]
    assert [len(g) for g in split(files, None, max_refs=3)] == [3, 1]
    assert {f.series_uid for f in split(files, "series")[1]} == {"1.2.2"}


def test_study_grouping(tmp_path):
    for n in range(3):
        make_dataset(study=f"1.2.{n % 2}").save_as(tmp_path / f"{n}.dcm", enforce_file_format=True)
    assert sorted(len(g) for g in split(scan([tmp_path]).files, "study")) == [1, 2]
