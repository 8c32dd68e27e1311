"""LayerNorm, position-wise feed-forward, residual sub-layers, encoder and decoder layers (paper 3.1, 3.3)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from transformer.attention import AttentionRecord, KeyValue, MultiHeadAttention
from transformer.dropout import Dropout


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


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position alone."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        for lin in (self.w_1, self.w_2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, len, d_model) -> (batch, len, d_ff) -> (batch, len, d_model)
        return self.w_2(F.relu(self.w_1(x)))


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
    """Self-attention then feed-forward, each inside a Residual."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float,
                 attention_dropout: float, norm: str, eps: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, attention_dropout)
        self.feed_forward = FeedForward(d_model, d_ff)
        self.attn_residual = Residual(d_model, dropout, norm, eps)
        self.ff_residual = Residual(d_model, dropout, norm, eps)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None,
                need_weights: bool = False) -> tuple[torch.Tensor, AttentionRecord | None]:
        # x: (batch, src_len, d_model); src_mask: (batch, 1, 1, src_len)
        h = self.attn_residual.input(x)
        out, record = self.self_attn(h, self.self_attn.project_kv(h), src_mask, need_weights=need_weights)
        x = self.attn_residual.output(x, out)
        return self.ff_residual(x, self.feed_forward), record


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder output (memory), feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float,
                 attention_dropout: float, norm: str, eps: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, attention_dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, attention_dropout)
        self.feed_forward = FeedForward(d_model, d_ff)
        self.self_residual = Residual(d_model, dropout, norm, eps)
        self.cross_residual = Residual(d_model, dropout, norm, eps)
        self.ff_residual = Residual(d_model, dropout, norm, eps)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: KeyValue,
        src_mask: torch.Tensor | None,
        self_kv: KeyValue | None = None,
        need_weights: bool = False,
        past_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KeyValue, AttentionRecord | None, AttentionRecord | None]:
        """x: (batch, tgt_len, d_model) new target positions; memory_kv: this layer's projection of
        the encoder output; self_kv: cached keys/values of earlier target positions (None = none),
        of which row past_rows[i] is row i's past when given (beam search's pending reorder).
        Returns the output, the self-attention keys/values including x's (for the cache), and records."""
        h = self.self_residual.input(x)  # masked self-attention over the target so far
        step_kv = self.self_attn.project_kv(h)
        new_kv = step_kv if self_kv is None else self_kv.append(step_kv, past_rows)
        out, self_record = self.self_attn(h, new_kv, causal=True, need_weights=need_weights)
        x = self.self_residual.output(x, out)
        h = self.cross_residual.input(x)  # cross-attention: queries from the decoder, keys from memory
        out, cross_record = self.cross_attn(h, memory_kv, src_mask, need_weights=need_weights)
        x = self.cross_residual.output(x, out)
        x = self.ff_residual(x, self.feed_forward)
        return x, new_kv, self_record, cross_record
