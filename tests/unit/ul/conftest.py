"""Fixtures for the engine tests: engine servers on free ports, raw-socket peers that speak
PDUs by hand (to misbehave on purpose), and the DCMTK fixtures of the interop tests."""

from __future__ import annotations
