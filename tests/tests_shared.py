"""Helpers importable from module-scoped fixtures."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def assert_one_line_error(result, *words: str) -> None:
    """A non-zero exit whose stderr ends with exactly one 'error: ...' line, and no traceback."""
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    for w in words:
        assert w in errors[0], errors[0]


# a tiny training run for the command-line tests: seconds on one thread
TINY_RUN = ["--preset", "tiny", "--d-model", "32", "--heads", "2", "--d-ff", "64", "--layers", "1",
            "--eval-samples", "8", "--threads", "1", "--max-tokens", "400", "--warmup", "20"]
