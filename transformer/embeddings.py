"""Token embeddings scaled by sqrt(d_model) and the sinusoidal positional encoding."""

from __future__ import annotations

import math

import torch
from torch import nn

from transformer.dropout import Dropout


class TokenEmbedding(nn.Module):
    """Embedding lookup multiplied by sqrt(d_model) (paper section 3.4)."""

    def __init__(self, vocab_size: int, d_model: int, pad_id: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        self.pad_id = pad_id
        self.scale = math.sqrt(d_model)
        nn.init.normal_(self.weight, mean=0.0, std=d_model**-0.5)
        with torch.no_grad():
            self.weight[pad_id].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # (batch, len) -> (batch, len, d_model)
        return nn.functional.embedding(tokens, self.weight, self.pad_id) * self.scale


def sinusoidal_table(max_len: int, d_model: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(max_len, d_model) with PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(...)."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model/2,)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (max_len, d_model/2)
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.to(dtype)


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to the embeddings, then dropout (paper section 3.5)."""

    def __init__(self, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
        # x: (batch, len, d_model); positions offset .. offset+len-1 (offset > 0 when decoding step by step;
        # a (batch,) tensor when the rows are at different positions: one new position each, len 1)
        if isinstance(offset, torch.Tensor):
            if int(offset.max()) >= self.pe.size(0):
                raise ValueError(f"position {int(offset.max())} exceeds max_len {self.pe.size(0)}")
            return self.dropout(x + self.pe[offset][:, None].to(x.dtype))  # (batch, 1, d_model)
        length = x.size(1)
        if offset + length > self.pe.size(0):
            raise ValueError(
                f"sequence of {offset + length} positions exceeds max_len {self.pe.size(0)}"
            )
        return self.dropout(x + self.pe[offset : offset + length].to(x.dtype))
