"""Alembic migrations of the SQL store, shipped inside the package so that an installed
wheel migrates its own database at start (``SqlStore.start``)."""
