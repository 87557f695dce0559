"""Results: the measurement record and the SQLite store."""
