"""Helpers shared by the test modules (tables, score batches, model bundles, a live server).

Test modules import from here, never from one another; the fixtures built on these helpers
live in ``tests/conftest.py``.
"""
