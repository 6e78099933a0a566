"""Sandbox stores: one Protocol (``base``), several backends, one contract suite."""
