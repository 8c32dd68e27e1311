"""The Typer app: --version and the registered commands."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import typer
from typer.core import TyperGroup

from transformer_cli import package_version


class Stopped(Exception):
    """Ctrl-C or SIGTERM carried past Typer (which would turn it into a silent exit 130) to main()."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__("interrupted")
        self.interrupt = interrupt


class _Group(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise Stopped(e) from None


_app = typer.Typer(
    name="transformer-cli",
    help="Train a Transformer translator and look inside it, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"transformer-cli {package_version()}")
        raise typer.Exit()


@_app.callback()
def root(
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Show the version and exit."),
) -> None:
    """Train a Transformer translator and look inside it, from the terminal."""


# each command and the module that registers it, in the order `--help` lists them
COMMANDS = {"prepare": "prepare", "train": "train", "translate": "translate", "shortlist": "shortlist",
            "inspect-attention": "inspect_attention", "explain": "explain", "export": "export",
            "import": "import_model", "serve": "serve"}


def register(names: Iterable[str] = COMMANDS) -> typer.Typer:
    """The app with these commands registered (each module once): main() registers only the command it
    runs, so `translate` does not import what `prepare`, `train` or `serve` need (start-up); the
    `app` of `from cli.main import app` has them all."""
    import importlib

    for name in names:
        if name not in {command.name for command in _app.registered_commands}:
            importlib.import_module(f"cli.{COMMANDS[name]}").register(_app)
    return _app


def __getattr__(name: str):
    """`from cli.main import app` (tests, programs): the app with every command."""
    if name == "app":
        return register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _commands_for(args: list[str]) -> list[str]:
    """The command these arguments run, alone when they name one; else all (help, --version, a typo)."""
    return [args[0]] if args and args[0] in COMMANDS else list(COMMANDS)


def is_usage_error(e: BaseException) -> bool:
    """A wrong flag or a value of the wrong type (click's UsageError and its subclasses)."""
    return any(k.__name__ == "UsageError" for k in type(e).__mro__) and hasattr(e, "format_message")


def invoke() -> int | None:
    """app() with click's usage errors (an unknown flag, a value of the wrong type) as one line."""
    try:
        return register(_commands_for(sys.argv[1:]))(standalone_mode=False)
    except typer.Abort:
        raise KeyboardInterrupt from None
    except Stopped as e:
        raise e.interrupt from None
    except Exception as e:  # noqa: BLE001 - Typer may vendor click, so its errors are matched by shape
        if not is_usage_error(e):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            print(e.ctx.get_help())
            sys.exit(0)
        command = f" {e.ctx.info_name}" if e.ctx and e.ctx.parent else ""
        print(f"error: {e.format_message()} (see transformer-cli{command} --help)", file=sys.stderr)
        sys.exit(2)


def stop_on_sigterm() -> None:
    """SIGTERM (docker stop, Kubernetes, Slurm, systemd; torchrun passes it on to its workers) raises
    Terminated, a KeyboardInterrupt: whatever a command does on Ctrl-C (train saves a checkpoint,
    translate keeps its .partial, prepare and export remove their temporary directory) it does on
    SIGTERM too. A forked worker (a multiprocessing pool's) that inherits the handler dies of the
    signal as it did before."""
    import os
    import signal

    from transformer_cli.errors import Terminated

    pid = os.getpid()

    def terminate(signum, frame) -> None:
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)


def main() -> None:
    """Console entry point: a broken pipe (| head) ends quietly; Ctrl-C (exit 130), SIGTERM (143) and
    file-system errors (disk full, permission denied) are one line; an unexpected failure is one line
    too (TRANSFORMER_CLI_DEBUG=1 shows the traceback)."""
    import os

    from cli.errors import interruption
    from cli.process import leave

    stop_on_sigterm()
    try:
        code = invoke()
        leave(code if isinstance(code, int) else 0)  # its final flush may meet a broken pipe too
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except KeyboardInterrupt as e:
        word, status = interruption(e)
        print(f"error: {word}", file=sys.stderr)
        sys.exit(status)
    except OSError as e:
        if os.environ.get("TRANSFORMER_CLI_DEBUG"):
            raise
        from transformer_cli.errors import os_error_message

        print(f"error: {os_error_message(e)}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the last resort: never a bare traceback for users
        if os.environ.get("TRANSFORMER_CLI_DEBUG"):
            raise
        print(f"error: internal error ({type(e).__name__}: {e}); set TRANSFORMER_CLI_DEBUG=1 for the traceback",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
