"""One training process per run directory: an advisory lock that the kernel drops when the process
dies, so a killed run never blocks its own resume."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from transformer_cli.errors import RunError

LOCK_FILE = ".lock"


class RunLock:
    """`with RunLock(run_dir):` holds RUN/.lock (flock) for the whole run. A second process gets one
    line naming the directory and the process that holds it. The directory is made if missing and,
    when it was made here and nothing else was written into it, removed again on the way out."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_FILE
        self.created = False
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunError(f"{self.run_dir} exists and is not a directory")
        if not self.run_dir.exists():
            for parent in self.run_dir.parents:
                if parent.exists() and not parent.is_dir():
                    raise RunError(f"{self.run_dir}: {parent} is not a directory")
            self.run_dir.mkdir(parents=True)
            self.created = True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"{self.run_dir} is in use by another training run (pid {holder}); "
                           "wait for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
        if self.created and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()


def is_empty_run_dir(run_dir: Path) -> bool:
    """Missing, or nothing in it but possibly a lock file (another torchrun rank may be creating it)."""
    try:
        return not [p for p in run_dir.iterdir() if p.name != LOCK_FILE]
    except FileNotFoundError:
        return True
