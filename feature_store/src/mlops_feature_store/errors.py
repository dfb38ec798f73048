"""The one error the runner reports as the caller's (exit code 2)."""


class UserError(Exception):
    """Bad arguments, a missing file, an unknown entity or feature view."""
