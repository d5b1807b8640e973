"""WHAT to run: catalogs, user settings and the ExperimentSpec.

Nothing in this package imports textual (enforced by tests/unit/test_boundaries.py).
"""
