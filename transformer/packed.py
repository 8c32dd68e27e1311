"""Linear layers that can compute with their weight packed once for the CPU's oneDNN kernels, for inference.

nn.Linear hands its weight to the matrix library at every call, which reorders it into the blocked
layout its kernels read. Decoding makes hundreds of calls per batch of sentences with a few hundred
rows each, so that reordering is a visible share of the work. oneDNN's linear with the weight
reordered once (the kernel torch.compile uses for frozen CPU models) computes the same x W^T + b,
10-30% faster per call here (bench/RESULTS.md).

The model builds every linear layer as a PackedLinear, which is a plain nn.Linear until
pack_linears() turns packing on. The packed copy is keyed on the weight it was made from (its
storage, autograd's version counter, its dtype) and made again when any of them changes, so
load_state_dict, an in-place edit or .to(dtype) after packing needs nothing more. (A write through
`weight.data` bypasses the version counter: autograd does not see it either.) Calls that need
gradients, run elsewhere than the CPU, in a dtype oneDNN cannot pack on this CPU or while tracing
take nn.Linear's own path. In inference, `activated` applies the feed-forward's activation inside the
packed kernel (a post-op), and FusedLinears computes layers that read the same input (attention's
W^Q, W^K, W^V) as one stacked layer: fewer calls and fewer passes over memory, the same outputs.

int8 (pack_linears(model, int8=...)): the chosen layers keep their weight as int8, one scale per
output row (symmetric), packed once, and quantise each call's input with one scale and zero point
for the whole call (dynamic quantisation). Layers up to FBGEMM_MAX_OUT outputs wide (every layer of
the model but a vocabulary projection) run fbgemm's dynamic linear, which quantises, multiplies and
dequantises in one call (1.6-3x faster than those steps as separate operators, bench/RESULTS.md);
wider ones run oneDNN's quantised linear, faster there. The input has 8 bits where the CPU has VNNI
(or AMX), 7 elsewhere: without VNNI the u8 x s8 product sums pairs into 16 bits (vpmaddubsw), which
saturates with full-range inputs (fbgemm's reduce_range for the same reason). The output is float32.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


class PackedLinear(nn.Linear):
    """An nn.Linear (same parameters, same state_dict) that, once packing is on, computes CPU
    inference calls from its weight packed for oneDNN, packed again whenever the weight changed."""

    packing = False  # set per layer by pack_linears(); the class default keeps nn.Linear's path
    int8 = False  # set per layer by pack_linears(int8=...): dynamic int8 instead of float32 packing
    _packed_key: tuple | None = None  # what the packed copy was made from (_packed_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # y = x W^T + b: (..., in_features) -> (..., out_features)
        return self._affine(x, None)

    def activated(self, x: torch.Tensor, activation: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """activation(x W^T + b), the activation applied inside the packed kernel where it has it as a
        post-op (ReLU, GELU and SiLU in oneDNN's, ReLU in fbgemm's int8), so the (..., out_features)
        result is written once instead of twice; else after the call."""
        return self._affine(x, activation)

    def _affine(self, x: torch.Tensor, activation: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
        """x W^T + b (then the activation, if any) by the kernel this call takes."""
        w = self._parameters["weight"]  # self.weight without nn.Module's __getattr__ (a hot path)
        packed = self._packed_for(x, w) if self.packing else None
        done = activation is None  # whether the activation has been applied (or there is none)
        if packed is None:
            y = F.linear(x, w, self.bias)  # nn.Linear's own forward
        elif not self.int8:
            post_op = POST_OPS.get(activation)
            done = done or post_op is not None
            y = torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, *(post_op or NO_POST_OP))
        elif activation is F.relu and not isinstance(packed, tuple):  # fbgemm's (only) fused activation
            y, done = torch.ops.quantized.linear_relu_dynamic(x, packed, not _vnni()), True
        else:
            y = _int8_linear(x, packed, self.bias)
        return y if done else activation(y)

    def _packed_for(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        """The packed weight for this call (packed again if w changed), or None where the call takes
        nn.Linear's path: gradients wanted, off the CPU, a dtype oneDNN cannot pack here, tracing."""
        return self._packed_weight(w) if _takes_packed(x, w) else None

    def packed_weight(self) -> torch.Tensor | None:
        """The weight reordered for oneDNN (an opaque tensor), made again when the weight changed;
        None where oneDNN cannot pack its dtype on this CPU."""
        return self._packed_weight(self.weight)

    def _packed_weight(self, w: torch.Tensor) -> torch.Tensor | tuple | None:
        key = self._source_key(w)
        if self._packed_key != key:
            b = self._parameters["bias"]  # fbgemm's int8 packing holds the bias too
            if self.int8 and w.dtype == torch.float32:
                self._packed = _int8_weight(w.detach(), None if b is None else b.detach())
            else:
                self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach()) if _packs(w.dtype) else None
            self._packed_from = w.detach()  # keeps that storage alive, so no other weight gets its address
            self._packed_key = key
        return self._packed

    def _source_key(self, w: torch.Tensor) -> tuple:
        """What a packed copy of weight w (and this layer's bias) depends on: their storage and autograd
        versions, w's dtype and the int8 setting."""
        b = self._parameters["bias"]
        return w.data_ptr(), w._version, w.dtype, self.int8, None if b is None else (b.data_ptr(), b._version)

    def rows(self, ids: torch.Tensor) -> "PackedLinear":
        """A layer computing only the output features `ids` (in that order): their rows of the weight
        and bias, copied, with this layer's dtype, packing and int8 setting (a vocabulary shortlist's
        projection, transformer/shortlist.py)."""
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor even inside a search: packing
            ids = ids.clone()  # reads its version counter
            out = _linear_of(self.weight[ids], None if self.bias is None else self.bias[ids])
        out.packing, out.int8 = self.packing, self.int8
        return out

    def __getstate__(self) -> dict:
        """Copies and pickles leave the packed copy out (opaque to them); the next call packs again."""
        return {k: v for k, v in super().__getstate__().items() if not k.startswith("_packed")}


class FusedLinears:
    """PackedLinears that read the same input (attention's W^Q, W^K, W^V) computed as one layer once
    packing is on: their weights stacked along the outputs, packed once and again whenever any of
    them changes, so one call instead of several (and in int8 one quantisation of the input, the
    same products: the layers' outputs unchanged). Returns each layer's output, (..., out_features)
    views of the one result. Elsewhere (gradients, training, tracing) each layer computes alone.
    Not a module: it owns no parameters, only the packed copy of its layers' weights."""

    def __init__(self, *layers: PackedLinear) -> None:
        self.layers = layers
        self.sizes = [layer.out_features for layer in layers]
        self._key: tuple | None = None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        first = self.layers[0]
        if not all(layer.packing and layer.int8 == first.int8 for layer in self.layers) \
                or not _takes_packed(x, first._parameters["weight"]):
            return tuple(layer(x) for layer in self.layers)
        return self._stacked()(x).split(self.sizes, dim=-1)  # (..., sum of out_features) -> each layer's

    def _stacked(self) -> PackedLinear:
        """One PackedLinear holding the layers' weights and biases stacked, made again when any changed."""
        key = tuple(layer._source_key(layer._parameters["weight"]) for layer in self.layers)
        if self._key != key:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors: packing reads their versions
                bias = None if any(layer.bias is None for layer in self.layers) else \
                    torch.cat([layer.bias for layer in self.layers])
                stacked = _linear_of(torch.cat([layer.weight for layer in self.layers]), bias)
            stacked.packing, stacked.int8 = True, self.layers[0].int8
            self._stacked_layer, self._key = stacked, key
        return self._stacked_layer

    def __getstate__(self) -> dict:
        """Copies leave the stacked copy out; the next call makes it again."""
        return {"layers": self.layers, "sizes": self.sizes, "_key": None}


def _linear_of(weight: torch.Tensor, bias: torch.Tensor | None) -> PackedLinear:
    """A PackedLinear (packing off) with these (out, in) weight and (out,) bias tensors as its frozen
    parameters. Built on the meta device, so nothing is initialised only to be overwritten (and
    nn.utils.skip_init, which does the same, imports torch's symbolic shapes: 0.35 s of start-up)."""
    layer = PackedLinear(weight.size(1), weight.size(0), bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer


def _takes_packed(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether a packed layer computes x W^T from its packed weight: not where gradients are wanted,
    off the CPU, in another dtype than the weight's or while tracing (exporters see nn.Linear)."""
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return False
    return x.device.type == "cpu" and x.dtype == w.dtype \
        and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


# oneDNN's linear post-ops: activation -> (attr, scalars, algorithm) of mkldnn._linear_pointwise; the
# same values as the activation applied after (ReLU exactly, GELU's erf form and SiLU within 4e-6)
POST_OPS: dict[Callable, tuple[str, list, str]] = {F.relu: ("relu", [], ""), F.gelu: ("gelu", [], "none"),
                                                   F.silu: ("swish", [], "")}
NO_POST_OP = ("none", [], "")


@functools.cache
def _packs(dtype: torch.dtype) -> bool:
    """Whether oneDNN packs weights of this dtype on this CPU (bfloat16 needs AVX-512 or AVX-NE-CONVERT)."""
    if dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return dtype == torch.float32


def can_pack(model: nn.Module) -> bool:
    """oneDNN is built in and the model's weights are on the CPU."""
    return torch.backends.mkldnn.is_available() and all(p.device.type == "cpu" for p in model.parameters())


def pack_linears(model: nn.Module, int8: Callable[[str, PackedLinear], bool] | None = None) -> int:
    """Turn packing on for every PackedLinear of a CPU model (the Transformer builds all its linear
    layers so; parameters, ties and the state_dict unchanged), pack their weights now, and return how
    many; 0 where oneDNN is missing or the model is elsewhere. int8(name, layer): which layers compute
    in dynamic int8 (the others in float32). Later changes of the weights (other weights loaded, a
    dtype cast) are packed again at the next call."""
    if not can_pack(model):
        return 0
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PackedLinear)]
    for name, layer in layers:
        layer.packing = True
        layer.int8 = bool(int8 and int8(name, layer))
        layer.packed_weight()
    return len(layers)


FBGEMM_MAX_OUT = 2048  # int8 layers up to this many outputs run fbgemm's one-call dynamic linear: 1.6-2.5x
# oneDNN's path at 256-1,024 outputs, even at 1,500, behind at 4,000-8,000 (a vocabulary projection)


def _int8_weight(w: torch.Tensor, bias: torch.Tensor | None) -> tuple | torch.ScriptObject:
    """w (out, in) float32 -> its int8 form, one symmetric scale per output row: fbgemm's packed
    parameters (bias included) for layers up to FBGEMM_MAX_OUT wide where this torch has them, else
    (oneDNN-packed int8 weight, scales, zero points)."""
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (out,)
    if w.size(0) <= FBGEMM_MAX_OUT and (packed := _fbgemm_weight(w, bias, scales)) is not None:
        return packed
    w8 = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return torch.ops.onednn.qlinear_prepack(w8, None), scales.float(), torch.zeros(w.size(0), dtype=torch.long)


def _fbgemm_weight(w: torch.Tensor, bias: torch.Tensor | None, scales: torch.Tensor) -> torch.ScriptObject | None:
    """fbgemm's packed int8 weight and bias, or None where this torch lacks its quantised operators.
    They take the weight as a quantised tensor, whose constructors torch 2.13 marks deprecated: made
    here once per weight, the warning silenced; the call itself takes plain tensors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w, scales.double(), torch.zeros(w.size(0), dtype=torch.long), 0,
                                            torch.qint8)
            return torch.ops.quantized.linear_prepack(qw, bias)
    except (AttributeError, RuntimeError, NotImplementedError):
        return None


def _int8_linear(x: torch.Tensor, packed: tuple | torch.ScriptObject, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b with x quantised (8 bits with VNNI, else 7; one scale and zero point for the call), W
    int8 per row: one fbgemm call, or the quantisation in torch operators and oneDNN's product."""
    if not isinstance(packed, tuple):
        return torch.ops.quantized.linear_dynamic(x, packed, not _vnni())  # reduce_range: 7 bits
    qw, w_scales, w_zeros = packed
    top = 255 if _vnni() else 127
    lo, hi = (float(v) for v in x.aminmax())
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero stays exact (padding rows, ReLU outputs)
    scale = max(hi - lo, 1e-12) / top
    zero = int(round(-lo / scale))
    xq = (x / scale).round_().add_(zero).clamp_(0, top).to(torch.uint8)
    return torch.ops.onednn.qlinear_pointwise.default(xq, scale, zero, qw, w_scales, w_zeros, bias, 1.0, 0,
                                                      torch.float32, "none", [], "")


@functools.cache
def _vnni() -> bool:
    """Whether this CPU multiplies u8 x s8 with 32-bit sums (AVX-512 VNNI, AVX-VNNI or AMX), so that 8-bit
    inputs cannot saturate. Read from Linux's /proc/cpuinfo; elsewhere False (7 bits, always safe)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))
