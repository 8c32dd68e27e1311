"""Per-head statistics of attention maps: what --heads-summary shows."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HeadStats:
    entropy: float  # mean over query rows of -sum w log w (nats); low = focused
    mean_max: float  # mean over query rows of the largest weight
    diagonal: float  # mean over rows of the weight within one key of the proportional diagonal
    top_key: int  # key position receiving the most weight in total


def head_stats(weights: torch.Tensor) -> HeadStats:
    """weights: (query_len, key_len), rows summing to 1 (masked entries 0)."""
    w = weights.double()
    q_len, k_len = w.shape
    entropy = -(w * torch.where(w > 0, w.log(), torch.zeros_like(w))).sum(-1).mean()
    rows = torch.arange(q_len, dtype=torch.float64)
    centre = torch.round(rows * (k_len - 1) / max(q_len - 1, 1))  # (query_len,)
    near = (torch.arange(k_len, dtype=torch.float64)[None, :] - centre[:, None]).abs() <= 1
    return HeadStats(entropy=float(entropy), mean_max=float(w.max(-1).values.mean()),
                     diagonal=float((w * near).sum(-1).mean()), top_key=int(w.sum(0).argmax()))
