"""How the command-line process ends: after a command that leaves the interpreter nothing to do at
exit, without tearing it down.

Python's exit after `import torch` spends ~0.3 s destroying modules and objects (bench/RESULTS.md:
`python -c "import torch"` 1.16 s, with os._exit 0.85 s): a fifth of `echo x | transformer-cli
translate`. A command whose files are complete and closed when it returns, and that registered no
atexit work, calls skip_teardown(); main() then flushes stdout and stderr and ends the process with
os._exit. Every other command (train's writers and worker pools, serve, prepare's caches) exits as
Python does.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

_teardown = True  # whether the interpreter's own exit must run


def skip_teardown() -> None:
    """The command finished its work, closed its files and left nothing to run at exit."""
    global _teardown
    _teardown = False


def leave(code: int) -> NoReturn:
    """sys.exit(code), or after skip_teardown(): flush stdout and stderr, then os._exit(code). A
    flush that meets a broken pipe (| head) raises BrokenPipeError for main() to handle as any other."""
    if _teardown:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
