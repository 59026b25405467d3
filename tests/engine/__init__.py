"""Tests of stgcmt's own upper layer and DIMSE engine (``stgcmt.engine``).

A package so that its ``conftest.py`` is imported as ``engine.conftest`` and does not displace
``tests/conftest.py`` as the module ``conftest``.
"""
