"""One base class for problems the user can fix; the CLI prints their message as one line."""


class KwsError(Exception):
    """A user-facing error: bad input, missing file or device. The message is one line."""
