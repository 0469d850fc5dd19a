"""The one class of user-facing error: caught once at the CLI edge, printed as one line."""


class DrclError(Exception):
    """A problem the user can fix (bad input, bad params); the message is one line that names it."""
