"""Models that come into the toolkit: a Hugging Face MarianMTModel directory in the OPUS-MT layout
becomes an ordinary run directory (transformer_cli.importers.marian)."""

from transformer_cli.importers.marian import ImportResult, import_marian  # noqa: F401
