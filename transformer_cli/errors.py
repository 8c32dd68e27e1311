"""The library's one exception: what went wrong with a run, its data or the options, in one sentence."""

from transformer.errors import ParamError, named  # noqa: F401 - named() is how messages name parameters


class RunError(ParamError):
    """A problem the caller can fix (a missing file, a bad option, a run that cannot be resumed);
    the message names the file, the value or the parameter (the command line names its flag
    instead: ParamError.worded). The command line prints it as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, Kubernetes, Slurm, systemd, torchrun passing it on) raised as Ctrl-C's
    KeyboardInterrupt is, so every path that cleans up after Ctrl-C runs for it too; the command
    line says `terminated` and exits 143 (128 + 15) where Ctrl-C exits 130."""


def os_error_message(e: OSError) -> str:
    """'no space left on PATH', 'PATH: permission denied', ...: what the file system said, and where."""
    import errno

    where = e.filename or "the output"
    if e.errno == errno.ENOSPC:
        return f"no space left on {where}"
    return f"{where}: {(e.strerror or str(e)).lower()}"
