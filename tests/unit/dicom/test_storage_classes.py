"""The committed list of Storage SOP Classes against pydicom's copy of the UID registry."""

from pydicom._uid_dict import UID_dictionary

from stgcmt.dicom.storage_classes import STORAGE_SOP_CLASS_NAMES, STORAGE_SOP_CLASSES
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION, is_valid_uid

# Newer than the registry in the pydicom we pin (PS3.6 2024+).
NEWER_THAN_PYDICOM = {
    "1.2.840.10008.5.1.4.1.1.66.7",
    "1.2.840.10008.5.1.4.1.1.66.8",
    "1.2.840.10008.5.1.4.1.1.9.100.1",
    "1.2.840.10008.5.1.4.1.1.9.100.2",
}


def test_every_entry_is_a_current_storage_sop_class_of_the_registry() -> None:
    for uid, name in STORAGE_SOP_CLASS_NAMES:
        assert is_valid_uid(uid), uid
        assert "Storage" in name, (uid, name)
        if uid in NEWER_THAN_PYDICOM:
            continue
        registry_name, kind, _, retired, _ = UID_dictionary[uid]
        assert kind == "SOP Class", uid
        assert registry_name == name, uid
        assert retired != "Retired", uid


def test_no_duplicates_and_no_non_storage_classes() -> None:
    assert len(STORAGE_SOP_CLASSES) == len(STORAGE_SOP_CLASS_NAMES)
    assert STORAGE_COMMITMENT_PUSH_MODEL not in STORAGE_SOP_CLASSES
    assert VERIFICATION not in STORAGE_SOP_CLASSES
    assert "1.2.840.10008.1.3.10" not in STORAGE_SOP_CLASSES  # Media Storage Directory


def test_the_common_modalities_are_there() -> None:
    for uid in (
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR Storage
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
    ):
        assert uid in STORAGE_SOP_CLASSES
