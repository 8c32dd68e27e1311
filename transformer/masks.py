"""Attention masks. Convention everywhere: True = this query may attend to this key."""

from __future__ import annotations

import torch


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(batch, len) token ids -> (batch, 1, 1, len): keys that are not padding."""
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(q_len: int, k_len: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, q_len, k_len) lower triangle: query t sees keys <= t, never the future. With a cache
    (k_len > q_len) the queries are the last q_len positions, so the last query sees every key."""
    k_len = q_len if k_len is None else k_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)[None, None]
