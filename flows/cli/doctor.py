"""`lamia doctor` (being written)."""
