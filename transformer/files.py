"""Files and directories written so that a reader never sees half of one, and outputs that are not
regular files written where they are. The one place the toolkit writes a result file.

A regular file (or a new name) is written beside its destination, fsynced and renamed over it: a kill
or a full disk leaves the old file as it was. A symlink is followed to the file it names, which is
replaced the same way (the link is kept). Anything else that already exists there (a character device
such as /dev/null, a FIFO, a terminal, /dev/stdout, /proc/self/fd/N) is opened and written in place,
as a Unix program would: renaming over it would destroy the device node or cut the pipe.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Callable, Iterator

MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex (read a mebibyte at a time)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_stdout(path: Path | str) -> bool:
    """'-' names standard output."""
    return str(path) == "-"


def resolve_target(path: Path) -> tuple[Path, bool]:
    """(where the bytes go, True if they are written in place). Symlinks are followed one by one; a
    path through /proc (/dev/stdout, /dev/fd/N, /proc/self/fd/N: an open descriptor) or an existing
    file that is not a regular file is written in place; otherwise the final name, renamed over."""
    p = Path(os.path.abspath(path))
    for _ in range(MAX_LINKS):
        if os.path.realpath(p.parent).startswith("/proc/"):
            return p, True
        if not p.is_symlink():
            break
        p = Path(os.path.abspath(p.parent / os.readlink(p)))
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        return p, False
    except OSError:  # a loop of links, or a component that is not a directory: let open() say so
        return Path(path), True
    return p, not stat.S_ISREG(mode)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) beside `path` (its symlink's target), fsync, rename over it; on any failure the
    temporary file is removed and `path` is as it was. For the toolkit's own files (weights, configs,
    metrics): a target that is not a regular file (a FIFO, a device) is an OSError, never replaced."""
    target, in_place = resolve_target(Path(path))
    if in_place:
        raise OSError(errno.EINVAL, "exists and is not a regular file", str(path))
    tmp = _tmp_name(target)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """`text` as UTF-8 in `path`, through atomic_write."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class Output:
    """A result file that is written as it is produced (translate -o): lines reach a FIFO, a device or
    stdout as they are written; a regular file is renamed into place only when complete. If writing
    fails or is interrupted, the lines written so far are kept as `<name>.partial` beside it (nothing
    is lost, no hidden file is left) and the destination is as it was. `-` is standard output."""

    def __init__(self, path: Path | str, binary: bool = False) -> None:
        self.name = str(path)
        self.binary = binary
        self.stdout = is_stdout(path)
        self.target, self.in_place = (Path("-"), True) if self.stdout else resolve_target(Path(path))
        self.tmp = None if self.in_place else _tmp_name(self.target)
        self.partial = self.target.with_name(f"{self.target.name}.partial")
        self.file: io.IOBase | None = None

    def __enter__(self):
        if self.stdout:
            self.file = sys.stdout.buffer if self.binary else sys.stdout
        else:
            mode = "wb" if self.binary else "w"
            self.file = open(self.target if self.in_place else self.tmp, mode,
                             **({} if self.binary else {"encoding": "utf-8"}))
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.file.flush()
            if self.tmp is not None:
                os.fsync(self.file.fileno())
        if not self.stdout:
            with contextlib.suppress(OSError):
                self.file.close()
        if self.tmp is None:
            return
        if exc_type is None:
            os.replace(self.tmp, self.target)
            with contextlib.suppress(OSError):
                fsync_path(self.target.parent)
        elif self.tmp.exists() and self.tmp.stat().st_size:
            os.replace(self.tmp, self.partial)
        else:
            self.tmp.unlink(missing_ok=True)

    def kept(self) -> Path | None:
        """Where the lines written before a failure are, if they were kept aside."""
        return self.partial if self.tmp is not None and self.partial.exists() else None


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a new hidden directory beside `path` (its symlink's target) to fill; on success its
    files are fsynced and it is renamed into place, an existing directory moved aside first and
    removed last (so one of the two always exists). On failure the new directory is removed."""
    target = Path(os.path.realpath(path))
    tmp = _tmp_name(target)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_path(f)
        fsync_path(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_path(target.parent)
    shutil.rmtree(old, ignore_errors=True)
