"""The Typer app: --version and the registered commands."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

import typer

app = typer.Typer(
    name="transformer-cli",
    help="Train a Transformer translator and look inside it, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    try:
        return version("transformer-cli")
    except PackageNotFoundError:
        return "0+unknown"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"transformer-cli {package_version()}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Show the version and exit."),
) -> None:
    """Train a Transformer translator and look inside it, from the terminal."""


def _register() -> None:
    from cli import inspect_attention, prepare, train, translate

    for module in (prepare, train, translate, inspect_attention):
        module.register(app)


_register()


def main() -> None:
    """Console entry point: a broken pipe (| head) ends quietly; an unexpected failure is one line
    (TRANSFORMER_CLI_DEBUG=1 shows the traceback)."""
    import os

    try:
        app()
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the last resort: never a bare traceback for users
        if os.environ.get("TRANSFORMER_CLI_DEBUG"):
            raise
        print(f"error: internal error ({type(e).__name__}: {e}); set TRANSFORMER_CLI_DEBUG=1 for the traceback",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
