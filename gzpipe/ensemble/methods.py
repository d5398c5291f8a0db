"""Ensemble method names (no heavy import: the CLI lists them in `--help`)."""

METHODS = ("equal", "accuracy", "inverse_mae", "stacked")
WEIGHTED = ("equal", "accuracy", "inverse_mae")  # the seed's three: one weight per backbone
