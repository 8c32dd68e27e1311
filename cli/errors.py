"""One clear line on stderr and a non-zero exit for every error a user can cause."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from transformer_cli.errors import RunError as UserError  # noqa: F401 - the library's error, one line here

# library parameters whose flag has another name
RENAMED = {"alpha": "--length-penalty", "fmt": "--format", "out_dir": "--out", "output": "--output",
           "inputs": "--input", "run_dir": "--model", "joint_vocab": "--separate-vocab",
           "n_heads": "--heads", "n_encoder_layers": "--encoder-layers", "n_decoder_layers": "--decoder-layers"}


def flag(param: str) -> str:
    """The command line's name for a library parameter: beam_size -> --beam-size."""
    return RENAMED.get(param, "--" + param.replace("_", "-"))


def fail(error: BaseException | str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr (library parameters named as flags) and exit with `code`."""
    message = error.worded(flag) if hasattr(error, "worded") else str(error)
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def interruption(e: KeyboardInterrupt) -> tuple[str, int]:
    """How a stop request is worded, and its exit code: SIGTERM is ('terminated', 143), Ctrl-C
    ('interrupted', 130), as a shell reports a process that a signal ended."""
    from transformer_cli.errors import Terminated

    return ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
