"""Linear layers with their weight packed once for the CPU's oneDNN kernels, for inference.

nn.Linear hands its weight to the matrix library at every call, which reorders it into the blocked
layout its kernels read. Decoding makes hundreds of calls per batch of sentences with a few hundred
rows each, so that reordering is a visible share of the work. oneDNN's linear with the weight
reordered once (the kernel torch.compile uses for frozen CPU models) computes the same x W^T + b,
10-30% faster per call here (bench/RESULTS.md). Inference only: the packed copy does not follow
later changes of the weight, so a call that needs gradients takes nn.Linear's own path.
"""

from __future__ import annotations

import torch
from torch import nn


class PackedLinear(nn.Linear):
    """An nn.Linear (same parameters, same state_dict) that also holds its weight packed for oneDNN."""

    _packed: torch.Tensor  # opaque oneDNN tensor, deliberately not a buffer: .to() cannot move it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)) \
                or x.dtype != self._packed.dtype or x.device.type != "cpu" \
                or torch.jit.is_tracing() or torch.compiler.is_compiling():  # exporters trace plain ops
            return super().forward(x)
        # y = x W^T + b: (..., in_features) -> (..., out_features)
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")


def can_pack(model: nn.Module) -> bool:
    """oneDNN is built in and the model's weights are on the CPU."""
    return torch.backends.mkldnn.is_available() and all(p.device.type == "cpu" for p in model.parameters())


def pack_linears(model: nn.Module) -> int:
    """Turn every nn.Linear of a CPU model into a PackedLinear in place (parameters shared, tied
    weights stay tied) and return how many; 0 where oneDNN is missing or the model is elsewhere.
    Call it after any change of dtype."""
    if not can_pack(model):
        return 0
    count = 0
    for module in model.modules():
        if type(module) in (nn.Linear, PackedLinear):
            module.__class__ = PackedLinear
            module._packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach())
            count += 1
    return count
