"""The embedded runtime: PostgreSQL under .local/, the make demo / make up stack, sample events.

Production code never imports this package (tests/test_architecture.py checks it)."""
