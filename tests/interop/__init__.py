"""Interoperability tests against peers we did not write: Orthanc and DCMTK.

This directory is a package on purpose: its ``conftest.py`` is then imported as
``interop.conftest`` and does not displace ``tests/conftest.py`` as the module ``conftest``
(which test modules import helpers from).
"""
