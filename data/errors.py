"""Errors a user's data can cause; messages name the file, the line or the count."""

from transformer.errors import ParamError


class DataError(ParamError):
    """Bad input data or settings: the CLI shows the message as one line (parameters in its words)."""
