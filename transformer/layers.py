"""LayerNorm, position-wise feed-forward, residual sub-layers, encoder and decoder layers (paper 3.1, 3.3).

Layers are composed of injected sub-modules, as in the Annotated Transformer; encoder_layer() and
decoder_layer() build them from a ModelConfig, the one place a config becomes modules."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from transformer.attention import AttentionRecord, KeyValue, MultiHeadAttention
from transformer.cache import LayerCache
from transformer.config import ModelConfig
from transformer.dropout import Dropout
from transformer.packed import PackedLinear


class LayerNorm(nn.Module):
    """y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta over the last axis (biased variance)."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d_model))
        self.beta = nn.Parameter(torch.zeros(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the formula above, computed by torch's fused kernel (tests compare it with the formula)
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, self.eps)


# The feed-forward's non-linearity by ModelConfig.activation: the paper's max(0, x); GELU (exact, erf);
# swish = SiLU = x * sigmoid(x), what OPUS-MT (Marian) models use.
ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "gelu": F.gelu, "swish": F.silu}


class FeedForward(nn.Module):
    """FFN(x) = activation(x W_1 + b_1) W_2 + b_2, applied to each position alone; the paper's
    activation is max(0, .) (ReLU)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu") -> None:
        super().__init__()
        self.w_1 = PackedLinear(d_model, d_ff)
        self.w_2 = PackedLinear(d_ff, d_model)
        self.activation = ACTIVATION_FUNCTIONS[activation]
        for lin in (self.w_1, self.w_2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """activation(x W_1 + b_1): (batch, len, d_model) -> (batch, len, d_ff)."""
        return self.w_1.activated(x, self.activation)  # the activation fused into W_1's kernel where it can be

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, len, d_model) -> (batch, len, d_ff) -> (batch, len, d_model)
        return self.w_2(self.hidden(x))


class Residual(nn.Module):
    """Residual connection with layer normalization around one sub-layer.

    post-norm (paper): LayerNorm(x + Dropout(Sublayer(x)));  pre-norm: x + Dropout(Sublayer(LayerNorm(x))).
    """

    def __init__(self, d_model: int, dropout: float, norm: str, eps: float) -> None:
        super().__init__()
        self.norm = LayerNorm(d_model, eps)
        self.dropout = Dropout(dropout)
        self.pre_norm = norm == "pre"

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return self.output(x, sublayer(self.input(x)))

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """What the sub-layer reads: LayerNorm(x) with pre-norm, x itself with post-norm."""
        return self.norm(x) if self.pre_norm else x

    def output(self, x: torch.Tensor, sublayer_out: torch.Tensor) -> torch.Tensor:
        """x + Dropout(sub-layer output), normalised after the sum with post-norm (the paper)."""
        y = x + self.dropout(sublayer_out)
        return y if self.pre_norm else self.norm(y)


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each inside its Residual; the sub-modules are injected
    (built from a ModelConfig by encoder_layer())."""

    def __init__(self, self_attn: MultiHeadAttention, feed_forward: FeedForward, attn_residual: Residual,
                 ff_residual: Residual) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.attn_residual = attn_residual
        self.ff_residual = ff_residual

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None,
                need_weights: bool = False) -> tuple[torch.Tensor, AttentionRecord | None]:
        # x: (batch, src_len, d_model); src_mask: (batch, 1, 1, src_len)
        h = self.attn_residual.input(x)
        q, kv = self.self_attn.project_qkv(h)
        out, record = self.self_attn.attend(q, kv, src_mask, need_weights=need_weights)
        x = self.attn_residual.output(x, out)
        return self.ff_residual(x, self.feed_forward), record


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder output (memory), feed-forward, each
    inside its Residual; the sub-modules are injected (built from a ModelConfig by decoder_layer())."""

    def __init__(self, self_attn: MultiHeadAttention, cross_attn: MultiHeadAttention, feed_forward: FeedForward,
                 self_residual: Residual, cross_residual: Residual, ff_residual: Residual) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.feed_forward = feed_forward
        self.self_residual = self_residual
        self.cross_residual = cross_residual
        self.ff_residual = ff_residual

    def forward(self, x: torch.Tensor, cache: LayerCache, need_weights: bool = False
                ) -> tuple[torch.Tensor, KeyValue, AttentionRecord | None, AttentionRecord | None]:
        """x: (batch, new_len, d_model) new target positions; cache: this layer's memory_kv (the
        encoder output projected), source mask and self-attention past. Returns the output, the
        self-attention keys/values including x's (the cache's next past), and the records."""
        h = self.self_residual.input(x)  # masked self-attention over the target so far
        q, kv = self.self_attn.project_qkv(h)
        new_kv = cache.extend(kv)
        out, self_record = self.self_attn.attend(q, new_kv, cache.self_mask, causal=True, need_weights=need_weights)
        x = self.self_residual.output(x, out)
        h = self.cross_residual.input(x)  # cross-attention: queries from the decoder, keys from memory
        out, cross_record = self.cross_attn(h, cache.memory_kv, cache.src_mask, need_weights=need_weights)
        x = self.cross_residual.output(x, out)
        x = self.ff_residual(x, self.feed_forward)
        return x, new_kv, self_record, cross_record


# The one place a ModelConfig becomes sub-modules: a new option (an activation, a bias) goes here.

def _attention(config: ModelConfig) -> MultiHeadAttention:
    return MultiHeadAttention(config.d_model, config.n_heads, config.attention_dropout)


def _feed_forward(config: ModelConfig) -> FeedForward:
    return FeedForward(config.d_model, config.d_ff, config.activation)


def _residual(config: ModelConfig) -> Residual:
    return Residual(config.d_model, config.dropout, config.norm, config.layer_norm_eps)


def final_norm(config: ModelConfig) -> LayerNorm | None:
    """The LayerNorm after the last layer of a stack with pre-norm (post-norm layers end normalised)."""
    return LayerNorm(config.d_model, config.layer_norm_eps) if config.norm == "pre" else None


def encoder_layer(config: ModelConfig) -> EncoderLayer:
    """One encoder layer as config describes it (Encoder stacks n_encoder_layers of them)."""
    return EncoderLayer(_attention(config), _feed_forward(config), _residual(config), _residual(config))


def decoder_layer(config: ModelConfig) -> DecoderLayer:
    """One decoder layer as config describes it (Decoder stacks n_decoder_layers of them)."""
    return DecoderLayer(_attention(config), _attention(config), _feed_forward(config),
                        _residual(config), _residual(config), _residual(config))
