"""One base class for problems the user can fix; the CLI prints their message as one line."""


class KwsError(Exception):
    """A user-facing error: bad input, missing file or device. The message is one line."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (libraries often add multi-line detail)."""
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
