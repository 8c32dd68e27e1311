"""Reading text files line by line: gzipped or not, strict UTF-8, errors that name file and line."""

from __future__ import annotations

import gzip
import io
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
