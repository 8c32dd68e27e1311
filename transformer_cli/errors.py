"""The library's one exception: what went wrong with a run, its data or the options, in one sentence."""


class RunError(ValueError):
    """A problem the caller can fix (a missing file, a bad option, a run that cannot be resumed);
    the message names the file, the value or the flag. The command line prints it as one line."""


def os_error_message(e: OSError) -> str:
    """'no space left on PATH', 'PATH: permission denied', ...: what the file system said, and where."""
    import errno

    where = e.filename or "the output"
    if e.errno == errno.ENOSPC:
        return f"no space left on {where}"
    return f"{where}: {(e.strerror or str(e)).lower()}"
