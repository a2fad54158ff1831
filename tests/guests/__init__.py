"""Builders of the guests the test suite converts and inspects (like virt-v2v's test-data)."""
