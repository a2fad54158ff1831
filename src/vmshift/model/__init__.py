"""Frozen data types shared by the stages; no I/O here."""
