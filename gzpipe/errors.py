"""User-facing errors: one readable line, no traceback (the CLI catches these)."""


class GzpipeError(Exception):
    """Bad input or configuration that the user can fix; the message says how. The CLI exits with ``exit_code``."""

    exit_code = 2


class CatalogError(GzpipeError):
    """A catalogue that cannot be read as a whole (missing columns, empty, unreadable)."""
