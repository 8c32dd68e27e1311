"""An exponential moving average of the weights (Polyak averaging), for validation and the final model.

After every update, W_ema <- d_n * W_ema + (1 - d_n) * W with d_n = min(decay, (1 + n) / (10 + n)),
n the updates averaged so far: the warm-up of TensorFlow's ExponentialMovingAverage and OpenNMT-py's
average_decay, so a short run does not drag its random initial weights along (with decay 0.999 and
no warm-up they would still weigh 0.999^1350 = 26% after 1,350 updates). Until n reaches about
9 / (1 - decay), the average spans roughly the last tenth of the updates. Marian calls it
--exponential-smoothing, fairseq --ema-decay.

torch's AveragedModel keeps the copy (a deep copy: tied weights stay tied) and applies the update;
only the decay schedule is ours.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_rate(decay: float, averaged: int) -> float:
    """d_n: the weight the average keeps at update n + 1 (the model gets 1 - d_n)."""
    return min(decay, (1 + averaged) / (10 + averaged))


def moving_average(model: nn.Module, decay: float) -> AveragedModel:
    """An AveragedModel of `model` (its .module is a model of the same class) whose
    update_parameters(model) applies the moving average above; the first update copies the weights."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"the moving average's decay must be in (0, 1), got {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        torch._foreach_lerp_(averaged, current, 1.0 - ema_rate(decay, int(n_averaged)))

    average = AveragedModel(model, multi_avg_fn=update)
    average.module.eval()  # it is validated and saved, never trained
    return average
