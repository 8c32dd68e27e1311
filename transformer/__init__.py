"""The encoder-decoder Transformer of "Attention Is All You Need", written from scratch.

This package imports torch only: no I/O, no printing, no tokenizers.
"""

from transformer.config import ModelConfig
from transformer.model import AttentionMaps, Transformer

__all__ = ["ModelConfig", "Transformer", "AttentionMaps"]
