"""User-facing errors: every stage raises :class:`UserError` for bad input; the CLI turns it into one line
on stderr and exit code 2, with no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a bad request: the message names the input and the fix. Exit code 2, no traceback."""

    exit_code = 2
