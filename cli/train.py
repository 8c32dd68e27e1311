"""`transformer-cli train` (not implemented yet)."""

from __future__ import annotations

import typer

from cli.errors import fail


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def command() -> None:
        """Not implemented yet."""
        fail("'train' is not implemented yet")
