"""Errors a user's data can cause; messages name the file, the line or the count."""


class DataError(ValueError):
    """Bad input data or settings: the CLI shows the message as one line."""
