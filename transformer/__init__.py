"""The encoder-decoder Transformer of "Attention Is All You Need", written from scratch.

This package imports torch (and safetensors) only: no tokenizers, no printing. Its names are imported
on first use, so `transformer.files` and `transformer.errors` (used by data/) do not load torch.
"""

_EXPORTS = {"ModelConfig": "transformer.config", "Transformer": "transformer.model",
            "AttentionMaps": "transformer.model"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """ModelConfig, Transformer, AttentionMaps, imported when first asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transformer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
