"""Which presentation contexts ``send`` proposes, and in which transfer syntax each file goes.

By default (``negotiate``, storescu's way) every SOP Class is proposed once per transfer syntax
its files are in, each such context listing that syntax alone, so a peer that supports it can
only pick it and the file goes as it is on disk (no transcoding). When a class has files in an
uncompressed syntax, one more context offers Explicit VR Little Endian and Implicit VR Little
Endian (those of the two not already proposed alone): an archive that takes only one of them
still receives everything, transcoded on the fly (:mod:`stgcmt.dicom.transcode`). Compressed
files (JPEG, ...) can only go in their own syntax: stgcmt does not decompress.

``implicit`` / ``explicit`` propose uncompressed files only in Implicit / Explicit VR Little
Endian (transcoding what is in another syntax); ``file`` proposes each file's own syntax only.
Compressed files are proposed in their own syntax whatever the mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, Protocol

from stgcmt.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

if TYPE_CHECKING:
    from stgcmt.scu.dicomfiles import LocalFile

Propose = Literal["negotiate", "implicit", "explicit", "file"]
PROPOSE_CHOICES: tuple[str, ...] = ("negotiate", "implicit", "explicit", "file")

UNCOMPRESSED: frozenset[str] = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)
"""What :func:`stgcmt.dicom.transcode.transcode` converts between."""

FALLBACKS: tuple[str, ...] = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
"""What an uncompressed file may be transcoded to, in order of preference."""

Offer = tuple[str, tuple[str, ...]]
"""One presentation context to propose: SOP Class UID, transfer syntaxes."""

MAX_CONTEXTS = 128


class Accepting(Protocol):
    def accepts(self, sop_class_uid: str, transfer_syntax: str) -> bool: ...


def syntax_name(uid: str) -> str:
    """``uid`` with its name, for messages; pydicom's dictionary is loaded only when one is
    written (a failure), not by every ``send``."""
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def targets(transfer_syntax: str, mode: Propose) -> tuple[str, ...]:
    """The syntaxes a file in ``transfer_syntax`` may be sent in, best first (its own first:
    nothing to convert)."""
    if transfer_syntax not in UNCOMPRESSED or mode == "file":
        return (transfer_syntax,)
    if mode == "implicit":
        return (IMPLICIT_VR_LITTLE_ENDIAN,)
    if mode == "explicit":
        return (EXPLICIT_VR_LITTLE_ENDIAN,)
    return tuple(dict.fromkeys((transfer_syntax, *FALLBACKS)))


def offers(files: Iterable[LocalFile], mode: Propose) -> list[list[Offer]]:
    """The contexts to propose, grouped by SOP Class (a group is never split over two
    associations, so a file's fallback is proposed next to its own syntax)."""
    by_class: dict[str, dict[str, None]] = {}
    for f in files:
        by_class.setdefault(f.sop_class_uid, {})[f.transfer_syntax] = None
    groups = []
    for sop_class, syntaxes in by_class.items():
        if mode == "negotiate":
            group: dict[Offer, None] = {(sop_class, (ts,)): None for ts in syntaxes}
            if any(ts in UNCOMPRESSED for ts in syntaxes):
                extra = tuple(ts for ts in FALLBACKS if ts not in syntaxes)
                if extra:
                    group[(sop_class, extra)] = None
        else:
            group = {(sop_class, targets(ts, mode)): None for ts in syntaxes}
        groups.append(list(group))
    return groups


def plan_associations(
    files: Iterable[LocalFile], mode: Propose, *, reserve: int = 1
) -> list[list[Offer]]:
    """:func:`offers` packed into associations of at most 128 contexts (``reserve`` left for
    Storage Commitment), keeping each SOP Class's contexts together."""
    size = MAX_CONTEXTS - reserve
    plans: list[list[Offer]] = [[]]
    for group in offers(files, mode):
        for start in range(0, len(group), size):
            part = group[start : start + size]
            if len(plans[-1]) + len(part) > size:
                plans.append([])
            plans[-1].extend(part)
    return plans


def choose(assoc: Accepting, f: LocalFile, mode: Propose, archive: object) -> tuple[str, str]:
    """(transfer syntax to send ``f`` in, "") or ("", why it cannot be sent)."""
    own = f.transfer_syntax
    if (mode in ("negotiate", "file") or own not in UNCOMPRESSED) and assoc.accepts(
        f.sop_class_uid, own
    ):
        return own, ""  # as it is on disk: the common case, nothing to convert
    wanted = targets(own, mode)
    for syntax in wanted:
        if assoc.accepts(f.sop_class_uid, syntax):
            return syntax, ""
    sop_class = syntax_name(f.sop_class_uid)
    if f.transfer_syntax not in UNCOMPRESSED:
        return "", (
            f"{syntax_name(f.transfer_syntax)} not accepted by {archive} for {sop_class}"
            " and stgcmt does not decompress"
        )
    tried = " or ".join(syntax_name(ts) for ts in wanted)
    return "", f"{archive} rejected the presentation context {sop_class} in {tried}"
