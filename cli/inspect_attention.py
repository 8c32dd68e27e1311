"""`transformer-cli inspect-attention` (not implemented yet)."""

from __future__ import annotations

import typer

from cli.errors import fail


def register(app: typer.Typer) -> None:
    @app.command("inspect-attention", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def command() -> None:
        """Not implemented yet."""
        fail("'inspect-attention' is not implemented yet")
