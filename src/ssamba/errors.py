"""What counts as a user error: the command line prints its message as one
``ssamba: error: ...`` line and exits 2 (``--debug`` or ``SSAMBA_DEBUG=1`` shows the
traceback); anything else is a bug and keeps its traceback.

User errors are :class:`UserError` and its subclasses, ``ValueError`` (bad values, bad
files: the library raises it for what a user can fix) and ``OSError`` (missing,
unreadable or existing paths, a full disk).
"""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix; the message says what to change."""


class UnknownOptionError(UserError, TypeError):
    """A config key that is not an option (a ``TypeError``, as for unexpected keyword arguments)."""


#: Exceptions the command line reports as one line instead of a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError)


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (``KeyError`` quotes removed)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(str(text).split())
    return text or type(err).__name__
