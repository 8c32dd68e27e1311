"""One clear line on stderr and a non-zero exit for every error a user can cause."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from transformer_cli.errors import RunError as UserError  # noqa: F401 - the library's error, one line here


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)
