"""Which versions made a file: the toolkit's own and its libraries', recorded in every manifest."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

UNKNOWN = "0+unknown"  # a source checkout that was never installed


def package_version(name: str = "transformer-cli") -> str:
    """The installed version of `name` (this toolkit by default), or 0+unknown."""
    try:
        return version(name)
    except PackageNotFoundError:
        return UNKNOWN


def library_versions(*names: str) -> dict[str, str]:
    """{"transformer-cli": ..., each of `names`: ..., "python": ...} for a manifest."""
    return {"transformer-cli": package_version(), **{n: package_version(n) for n in names},
            "python": platform.python_version()}
