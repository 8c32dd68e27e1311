"""One clear line on stderr and a non-zero exit for every error a user can cause."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer


class UserError(Exception):
    """An error caused by the user's input or flags: shown as one line, no traceback."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def os_error_message(e: OSError) -> str:
    """'no space left on PATH', 'PATH: permission denied', ...: what the file system said, and where."""
    import errno

    where = e.filename or "the output"
    if e.errno == errno.ENOSPC:
        return f"no space left on {where}"
    return f"{where}: {(e.strerror or str(e)).lower()}"
