"""Conformance testing for prtcore backends, shipped with the package (see prtcore.testing.suite)."""
