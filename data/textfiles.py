"""Reading text files line by line: gzipped or not, strict UTF-8, errors that name file and line."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Iterator

from data.errors import DataError


def open_binary(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_lines(path: Path) -> Iterator[str]:
    """Each line of `path` without its line ending, as str; invalid UTF-8 is an error naming the line."""
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: line {lineno} is not valid UTF-8 (byte {e.start} of the line)"
                    ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data after line {lineno} ({e})") from None


def count_lines(path: Path) -> int:
    with open_binary(path) as f:
        return sum(1 for _ in f)


def decode_line(raw: bytes) -> tuple[str, bool]:
    """bytes -> (text without line ending, True if invalid UTF-8 was replaced)."""
    try:
        return raw.decode("utf-8").rstrip("\r\n"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace").rstrip("\r\n"), True


def decode_argument(text: str) -> tuple[str, bool]:
    """A command-line argument (Python keeps undecodable bytes as lone surrogates) -> (valid text,
    True if invalid UTF-8 was replaced with U+FFFD)."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return decode_line(text.encode("utf-8", "surrogateescape"))


def read_chunks(stream: io.BufferedIOBase, max_lines: int) -> Iterator[list[bytes]]:
    """Lines (bytes, with their newline) in chunks of at most max_lines. A chunk also ends when no
    more input is ready yet, so a slow producer (tail -f) gets each line translated as it arrives.
    Reads the file descriptor directly: a buffered peek would block exactly when input pauses."""
    import os
    import select

    try:
        fd = stream.fileno()
    except (OSError, io.UnsupportedOperation, AttributeError):
        fd = None
    if fd is None:  # an in-memory stream: nothing can pause
        chunk: list[bytes] = []
        for line in stream:
            chunk.append(line)
            if len(chunk) >= max_lines:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    lines: list[bytes] = []
    partial: list[bytes] = []
    while True:
        if lines and not select.select([fd], [], [], 0)[0]:
            yield lines
            lines = []
        data = os.read(fd, 1 << 16)
        if not data:
            break
        pieces = data.split(b"\n")
        for piece in pieces[:-1]:
            partial.append(piece + b"\n")
            lines.append(b"".join(partial))
            partial = []
            if len(lines) >= max_lines:
                yield lines
                lines = []
        if pieces[-1]:
            partial.append(pieces[-1])
    if partial:
        lines.append(b"".join(partial))
    if lines:
        yield lines


def same_file(a: Path, b: Path) -> bool:
    """True when a and b are one file (same path, or the same file through a link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_output_file(path: Path, inputs: list[Path] = (), flag: str = "--output") -> None:
    """Refuse an output file that cannot be written, or that is one of the inputs, before anything
    is opened for writing."""
    if path.is_dir():
        raise DataError(f"{flag} {path} is a directory, not a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise DataError(f"{flag} {path}: the directory {parent} {what}")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{flag} {path}: the directory {parent} is not writable")
    for source in inputs:
        if same_file(path, source):
            raise DataError(f"{flag} {path} is the input file {source}: writing it would destroy the input")


class AtomicOutput:
    """A text file written beside its destination and renamed over it on success, so a reader never
    sees a half-written file under the real name. On failure what was written is kept as
    `<name>.partial` (nothing is lost) and the destination is left as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.partial = path.with_name(f"{path.name}.partial")
        self.file = None

    def __enter__(self):
        self.file = open(self.tmp, "w", encoding="utf-8")
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except (OSError, ValueError):
            pass
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
            return
        if self.tmp.exists() and self.tmp.stat().st_size:
            os.replace(self.tmp, self.partial)
        else:
            self.tmp.unlink(missing_ok=True)
