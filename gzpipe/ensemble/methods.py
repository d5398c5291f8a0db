"""Ensemble method names (no heavy import: the CLI lists them in `--help`)."""

METHODS = ("equal", "accuracy", "inverse_mae")
