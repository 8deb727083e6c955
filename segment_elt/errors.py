"""Errors every part reports to people."""


class UserError(ValueError):
    """A mistake the person can fix; the message says how (the CLI prints it as one line)."""
