"""Attention masks. Convention everywhere: True = this query may attend to this key."""

from __future__ import annotations

import torch


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(batch, len) token ids -> (batch, 1, 1, len): keys that are not padding."""
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, size, size) lower triangle: position t sees positions <= t, never the future."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()[None, None]


def decoder_mask(tgt: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(batch, tgt_len) -> (batch, 1, tgt_len, tgt_len): causal and not padding."""
    return padding_mask(tgt, pad_id) & causal_mask(tgt.size(1), tgt.device)
