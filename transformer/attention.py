"""Scaled dot-product attention and multi-head attention (paper sections 3.2.1 and 3.2.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from transformer.masks import causal_mask


@dataclass(frozen=True)
class AttentionRecord:
    """What one attention call looked at; every head kept."""

    weights: torch.Tensor  # (batch, heads, query_len, key_len), rows sum to 1 (0 where masked)
    scores: torch.Tensor  # (batch, heads, query_len, key_len), QK^T/sqrt(d_k), -inf where masked


@dataclass(frozen=True)
class KeyValue:
    """Projected keys and values, split into heads; what the decoding cache stores."""

    k: torch.Tensor  # (batch, heads, key_len, d_k)
    v: torch.Tensor  # (batch, heads, key_len, d_k)

    def append(self, other: "KeyValue", rows: torch.Tensor | None = None) -> "KeyValue":
        """These keys/values (only batch rows `rows`, in that order, when given) followed by other's
        along the length; with rows, the reorder and the append are one copy (beam search)."""
        if rows is None:
            return KeyValue(torch.cat([self.k, other.k], dim=2), torch.cat([self.v, other.v], dim=2))
        return KeyValue(_select_then_cat(self.k, rows, other.k), _select_then_cat(self.v, rows, other.v))

    def select(self, index: torch.Tensor) -> "KeyValue":
        """Reorder along the batch axis (beam search keeps the hypotheses it chose)."""
        return KeyValue(self.k.index_select(0, index), self.v.index_select(0, index))


def _select_then_cat(past: torch.Tensor, rows: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """torch.cat([past[rows], new], dim=2) written once: (batch, heads, L, d_k) rows, then (n, heads, l, d_k)."""
    length = past.size(2)
    out = past.new_empty(rows.numel(), past.size(1), length + new.size(2), past.size(3))
    torch.index_select(past, 0, rows, out=out[:, :, :length])
    out[:, :, length:] = new
    return out


def attention_scores(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """QK^T / sqrt(d_k), with -inf where mask is False. (..., q_len, d_k) x (..., k_len, d_k) -> (..., q_len, k_len)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores


def softmax_weights(scores: torch.Tensor) -> torch.Tensor:
    """softmax over keys; a row whose keys are all masked gets weight 0 everywhere, never NaN."""
    weights = torch.softmax(scores, dim=-1)
    return weights.masked_fill(torch.isnan(weights), 0.0)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, AttentionRecord]:
    """softmax(QK^T/sqrt(d_k)) V. Returns the output (..., q_len, d_v) and what was looked at: the
    weights (..., q_len, k_len) and the scores before the softmax. dropout_p drops weights (training)."""
    scores = attention_scores(q, k, mask)
    weights = softmax_weights(scores) if mask is not None else torch.softmax(scores, dim=-1)  # no key masked
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return dropped @ v, AttentionRecord(weights=weights, scores=scores)


def fused_pays(q: torch.Tensor) -> bool:
    """Whether torch's fused attention kernel beats the explicit formula on this device: on the CPU
    only for float32 training. Its backward pass took 4-5x the explicit path's time in bfloat16/float16,
    and without gradients (decoding: one or a few queries per row) its forward took 1.7x (bench/RESULTS.md)."""
    return q.device.type != "cpu" or (q.dtype == torch.float32 and torch.is_grad_enabled())


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W^Q_i, K W^K_i, V W^V_i)."""

    def __init__(self, d_model: int, n_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)  # W^Q for all heads at once
        self.k_proj = nn.Linear(d_model, d_model)  # W^K
        self.v_proj = nn.Linear(d_model, d_model)  # W^V
        self.out_proj = nn.Linear(d_model, d_model)  # W^O
        self.attention_dropout = attention_dropout
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, len, d_model) -> (batch, heads, len, d_k)
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.d_k).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> KeyValue:
        """Keys and values for x: (batch, key_len, d_model) -> KeyValue of (batch, heads, key_len, d_k)."""
        return KeyValue(self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x)))

    def forward(
        self,
        query: torch.Tensor,
        kv: KeyValue,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, AttentionRecord | None]:
        """query: (batch, q_len, d_model); kv from project_kv; mask broadcastable to
        (batch, heads, q_len, key_len) with True = may attend; causal adds the lower-triangle mask.
        Returns (batch, q_len, d_model) and, when need_weights, the AttentionRecord.

        kv may have fewer rows than query (beam search: the k beams of a sentence read one memory
        row): then batch = rows * g and the g query rows of a key row are attended as one row of
        g * q_len queries, which is the same computation without copying the keys g times."""
        batch, rows = query.size(0), kv.k.size(0)
        if rows != batch and (causal or batch % rows):
            raise ValueError(f"{batch} query rows cannot share {rows} key rows" + (" causally" if causal else ""))
        q = self.split_heads(self.q_proj(query).reshape(rows, -1, query.size(2)))  # (rows, heads, g * q_len, d_k)
        p_drop = self.attention_dropout if self.training else 0.0
        q_len, k_len = q.size(2), kv.k.size(2)
        causal = causal and q_len > 1  # one new query position: every cached key is in its past
        formula = need_weights or not fused_pays(q)  # the formula itself: the maps are the ones it computes
        own_causal = not formula and causal and mask is None and q_len == k_len  # the kernel's causal path
        if causal and not own_causal:
            tri = causal_mask(q_len, k_len, q.device)  # (1, 1, q_len, key_len)
            mask = tri if mask is None else mask & tri
        if formula:
            out, record = scaled_dot_product_attention(q, kv.k, kv.v, mask, p_drop)
        else:  # the same formula in torch's fused kernel (tested equal)
            out, record = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask, dropout_p=p_drop,
                                                         is_causal=own_causal), None
        # (rows, heads, g * q_len, d_k) -> (batch, q_len, d_model)
        out = out.transpose(1, 2).reshape(batch, query.size(1), -1)
        if need_weights and rows != batch:
            record = AttentionRecord(*(unfold_rows(t, batch) for t in (record.weights, record.scores)))
        return self.out_proj(out), record if need_weights else None


def unfold_rows(t: torch.Tensor, batch: int) -> torch.Tensor:
    """(rows, heads, g * q_len, k_len) maps of folded queries -> (batch = rows * g, heads, q_len, k_len)."""
    rows, heads, _, k_len = t.shape
    return t.view(rows, heads, batch // rows, -1, k_len).transpose(1, 2).reshape(batch, heads, -1, k_len)
