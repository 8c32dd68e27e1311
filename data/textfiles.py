"""Reading text files line by line: gzipped or not, strict UTF-8, errors that name file and line."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Iterator

from data.errors import DataError
from transformer.errors import named


BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark, which Windows editors put at the start of a file


def open_binary(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _raw_lines(f: io.BufferedIOBase) -> Iterator[bytes]:
    """The lines of a binary file without their endings. As in Python's universal newlines, \\n, \\r\\n
    and a bare \\r each end a line: a file with old Mac (CR-only) line endings is its lines, not one
    giant line. (\\r is never part of a multi-byte UTF-8 character, so splitting bytes is safe.)"""
    for i, raw in enumerate(f):
        body = raw.rstrip(b"\r\n")
        if i == 0:  # a byte-order mark at the start of the file is dropped, as utf-8-sig does
            body = body.removeprefix(BOM)
        if b"\r" in body:
            yield from body.split(b"\r")
        else:
            yield body


def read_lines(path: Path) -> Iterator[str]:
    """Each line of `path` without its line ending (\\n, \\r\\n or \\r), as str; invalid UTF-8 is an
    error naming the line."""
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(_raw_lines(f), 1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: line {lineno} is not valid UTF-8 (byte {e.start} of the line)"
                    ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data after line {lineno} ({e})") from None


def count_lines(path: Path) -> int:
    """The number of lines read_lines yields."""
    with open_binary(path) as f:
        return sum(1 for _ in _raw_lines(f))


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


def check_output_file(path: Path, inputs: list[Path] = (), param: str = "output") -> None:
    """Refuse an output that cannot be written, or that is one of the inputs, before anything is
    opened for writing. '-' (stdout) and targets written in place (a device, a FIFO, /dev/stdout:
    transformer.files.resolve_target) need only be writable; a regular file needs a writable directory."""
    from transformer.files import is_stdout, resolve_target

    if is_stdout(path):
        return
    flag = named(param)
    if path.is_dir():
        raise DataError(f"{flag} {path} is a directory, not a file", param)
    target, in_place = resolve_target(path)
    if in_place:
        if target.exists() and not os.access(target, os.W_OK):
            raise DataError(f"{flag} {path} is not writable", param)
        return
    parent = target.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise DataError(f"{flag} {path}: the directory {parent} {what}", param)
    if not os.access(parent, os.W_OK):
        raise DataError(f"{flag} {path}: the directory {parent} is not writable", param)
    for source in inputs:
        if same_file(target, source):
            raise DataError(f"{flag} {path} is the input file {source}: writing it would destroy the input", param)


def check_input_file(path: Path, param: str = "input") -> None:
    """Any readable file that is not a directory: a regular file, a FIFO, /dev/stdin, <(zcat x.gz)."""
    if not path.exists():
        raise DataError(f"{path}: input file not found")
    if path.is_dir():
        raise DataError(f"{named(param)} {path} is a directory, not a file", param)
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")


def without_bom(chunks: Iterator[list[bytes]]) -> Iterator[list[bytes]]:
    """The chunks of one input with a byte-order mark at its very start removed (as utf-8-sig does)."""
    first = True
    for chunk in chunks:
        if first and chunk:
            chunk = [chunk[0].removeprefix(BOM), *chunk[1:]]
            first = False
        yield chunk
