"""Training maths: label-smoothed cross-entropy and the learning-rate schedules (paper 5.3, 5.4)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                       pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy against q = (1 - eps) * one_hot(target) + eps / V, padding ignored.

    logits: (batch, len, V), target: (batch, len). Returns (summed loss, summed plain NLL);
    divide by the number of non-pad tokens for a mean.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (batch, len, V)
    keep = target != pad_id  # (batch, len)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (batch, len)
    smooth = -logp.mean(dim=-1)  # (batch, len): cross-entropy against the uniform distribution
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    return loss[keep].sum(), nll[keep].sum()


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5); step counts from 1."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
