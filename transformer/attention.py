"""Scaled dot-product attention and multi-head attention (paper sections 3.2.1 and 3.2.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from transformer.masks import causal_mask
from transformer.packed import FusedLinears, PackedLinear


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

    def append(self, other: "KeyValue", rows: torch.Tensor | None = None, admitted: int = 0) -> "KeyValue":
        """These keys/values (only batch rows `rows`, in that order, when given) followed by other's
        along the length; with rows, the reorder and the append are one copy (beam search).
        admitted: other's last rows are new (continuous batching): their past slots are zeros."""
        if rows is None and not admitted:
            return KeyValue(torch.cat([self.k, other.k], dim=2), torch.cat([self.v, other.v], dim=2))
        return KeyValue(_select_then_cat(self.k, rows, other.k, admitted),
                        _select_then_cat(self.v, rows, other.v, admitted))

    def select(self, index: torch.Tensor) -> "KeyValue":
        """Reorder along the batch axis (beam search keeps the hypotheses it chose)."""
        return KeyValue(self.k.index_select(0, index), self.v.index_select(0, index))

    def contiguous(self) -> "KeyValue":
        """The same keys/values laid out (batch, heads, key_len, d_k) in memory (project_kv's are views)."""
        return KeyValue(self.k.contiguous(), self.v.contiguous())

    def cat(self, other: "KeyValue", length: int) -> "KeyValue":
        """These rows then other's, both zero-padded along the keys to `length` (admitted sentences)."""
        pad = lambda t: F.pad(t, (0, 0, 0, length - t.size(2)))  # noqa: E731
        return KeyValue(torch.cat([pad(self.k), pad(other.k)]), torch.cat([pad(self.v), pad(other.v)]))


def _select_then_cat(past: torch.Tensor, rows: torch.Tensor | None, new: torch.Tensor, admitted: int = 0
                     ) -> torch.Tensor:
    """torch.cat([past[rows], zeros for `admitted` rows, new], written once: past (batch, heads, L, d_k),
    rows (n - admitted,) or None (all of past), new (n, heads, l, d_k) -> (n, heads, L + l, d_k)."""
    length, old = past.size(2), new.size(0) - admitted
    out = past.new_empty(new.size(0), past.size(1), length + new.size(2), past.size(3))
    if rows is None:
        out[:old, :, :length] = past
    else:
        torch.index_select(past, 0, rows, out=out[:old, :, :length])
    if admitted:
        out[old:, :, :length] = 0  # never attended to (masked), but finite: 0 * NaN would be NaN
    out[:, :, length:] = new
    return out


def attention_scores(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """QK^T / sqrt(d_k), with -inf where mask is False. (..., q_len, d_k) x (..., k_len, d_k) -> (..., q_len, k_len)."""
    scores = (q @ k.transpose(-2, -1)).div_(math.sqrt(q.size(-1)))  # in place: the product is a new tensor
    if mask is not None:
        scores = torch.where(mask, scores, float("-inf"))
    return scores


def softmax_weights(scores: torch.Tensor) -> torch.Tensor:
    """softmax over keys; a row whose keys are all masked gets weight 0 everywhere, never NaN."""
    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)  # softmax of all -inf is NaN


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
        self.q_proj = PackedLinear(d_model, d_model)  # W^Q for all heads at once
        self.k_proj = PackedLinear(d_model, d_model)  # W^K
        self.v_proj = PackedLinear(d_model, d_model)  # W^V
        self.out_proj = PackedLinear(d_model, d_model)  # W^O
        self.attention_dropout = attention_dropout
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)
        self.kv_proj = FusedLinears(self.k_proj, self.v_proj)  # packed: [W^K W^V] in one call
        self.qkv_proj = FusedLinears(self.q_proj, self.k_proj, self.v_proj)  # self-attention: all three

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, len, d_model) -> (batch, heads, len, d_k)
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.d_k).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> KeyValue:
        """Keys and values for x: (batch, key_len, d_model) -> KeyValue of (batch, heads, key_len, d_k)."""
        k, v = self.kv_proj(x)
        return KeyValue(self.split_heads(k), self.split_heads(v))

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, KeyValue]:
        """Self-attention's projections of x (batch, len, d_model): x W^Q (batch, len, d_model), for
        attend(), and project_kv(x); one call where the layers are packed."""
        q, k, v = self.qkv_proj(x)
        return q, KeyValue(self.split_heads(k), self.split_heads(v))

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

        kv may have fewer rows than query (beam search: the g beams of a sentence read one memory
        row): fold_queries() then attends a key row's g query rows as one row of g * q_len queries."""
        return self.attend(self.q_proj(query), kv, mask, causal, need_weights)

    def attend(self, projected: torch.Tensor, kv: KeyValue, mask: torch.Tensor | None = None,
               causal: bool = False, need_weights: bool = False) -> tuple[torch.Tensor, AttentionRecord | None]:
        """forward() for a query already multiplied by W^Q: projected (batch, q_len, d_model)."""
        batch, rows = projected.size(0), kv.k.size(0)
        q = self.split_heads(fold_queries(projected, rows, causal))  # (rows, heads, g * q_len, d_k)
        p_drop = self.attention_dropout if self.training else 0.0
        causal = causal and q.size(2) > 1  # one new query position: every cached key is in its past
        if need_weights or not fused_pays(q):  # the formula itself: the maps are the ones it computes
            out, record = scaled_dot_product_attention(q, kv.k, kv.v, _and_causal(mask, causal, q, kv), p_drop)
        else:  # the same formula in torch's fused kernel (tested equal)
            out, record = fused_attention(q, kv, mask, causal, p_drop), None
        # (rows, heads, g * q_len, d_k) -> (batch, q_len, d_model): the heads concatenated, then W^O
        out = self.out_proj(out.transpose(1, 2).reshape(batch, projected.size(1), -1))
        if not need_weights:
            return out, None
        return out, record if rows == batch else unfold_record(record, batch)


def fold_queries(x: torch.Tensor, rows: int, causal: bool) -> torch.Tensor:
    """(batch, q_len, d_model) -> (rows, g * q_len, d_model), g = batch / rows: the g query rows
    that read one key row (the beams of a sentence, one memory row) become one row of queries, the
    same computation as copying the keys g times, without the copy. Causal attention cannot fold."""
    batch = x.size(0)
    if rows != batch and (causal or batch % rows):
        raise ValueError(f"{batch} query rows cannot share {rows} key rows" + (" causally" if causal else ""))
    return x.reshape(rows, -1, x.size(2))


def _and_causal(mask: torch.Tensor | None, causal: bool, q: torch.Tensor, kv: KeyValue) -> torch.Tensor | None:
    """mask with the future masked too when causal: & causal_mask, (1, 1, q_len, key_len)."""
    if not causal:
        return mask
    tri = causal_mask(q.size(2), kv.k.size(2), q.device)
    return tri if mask is None else mask & tri


def fused_attention(q: torch.Tensor, kv: KeyValue, mask: torch.Tensor | None, causal: bool,
                    dropout_p: float) -> torch.Tensor:
    """softmax(QK^T/sqrt(d_k)) V by torch's fused kernel, no weights returned: (..., q_len, d_k).
    A causal call with no other mask and as many queries as keys takes the kernel's own causal path."""
    own_causal = causal and mask is None and q.size(2) == kv.k.size(2)
    mask = mask if own_causal else _and_causal(mask, causal, q, kv)
    return F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask, dropout_p=dropout_p, is_causal=own_causal)


def unfold_record(record: AttentionRecord, batch: int) -> AttentionRecord:
    """The record of folded queries with one row per query row again (see fold_queries)."""
    return AttentionRecord(unfold_rows(record.weights, batch), unfold_rows(record.scores, batch))


def unfold_rows(t: torch.Tensor, batch: int) -> torch.Tensor:
    """(rows, heads, g * q_len, k_len) maps of folded queries -> (batch = rows * g, heads, q_len, k_len)."""
    rows, heads, _, k_len = t.shape
    return t.view(rows, heads, batch // rows, -1, k_len).transpose(1, 2).reshape(batch, heads, -1, k_len)
