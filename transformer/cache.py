"""The decoding cache: what encode() leaves for decode() and what every decode() step leaves for the next.

The cache owns its state: each decoder layer reads its past through layer(), and decode() stores
the step's keys/values with advance(). The searches' reorder() only records which rows go on (beam
search's kept prefixes, greedy search's unfinished rows); the next step applies it together with
its append (one copy, LayerCache.extend) and advance() clears it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from transformer.attention import KeyValue


@dataclass(frozen=True)
class LayerCache:
    """What one decoder layer reads from the cache at one step."""

    memory_kv: KeyValue  # this layer's projection of the encoder output, (rows, heads, src_len, d_k)
    src_mask: torch.Tensor  # (rows, 1, 1, src_len)
    past: KeyValue | None  # self-attention keys/values of the positions already decoded (None = none)
    past_rows: torch.Tensor | None  # pending reorder: row i continues past row past_rows[i]
    self_mask: torch.Tensor | None = None  # (rows, 1, 1, length + 1) True = a slot of this row's own past
    admitted: int = 0  # pending: the last `admitted` rows are new and have no past yet

    def extend(self, step_kv: KeyValue) -> KeyValue:
        """The self-attention keys/values this step attends to: the past (rows past_rows, in that
        order, when a reorder is pending) followed by step_kv, (batch, heads, new_len, d_k)."""
        return step_kv if self.past is None else self.past.append(step_kv, self.past_rows, self.admitted)


@dataclass
class DecoderCache:
    """State kept between decoding steps: the encoder output projected once per layer
    (memory_kv), the keys/values of the target positions so far (self_kv), and the source mask."""

    memory_kv: list[KeyValue]
    src_mask: torch.Tensor  # (batch, 1, 1, src_len)
    self_kv: list[KeyValue | None] = field(default_factory=list)
    length: int = 0  # target positions already decoded
    past_rows: torch.Tensor | None = None  # pending reorder: row i continues self_kv row past_rows[i]
    starts: torch.Tensor | None = None  # (rows,) first self-attention slot of each row (admitted rows)
    admitted: int = 0  # rows added since the last step (their zero past is written by the next step)

    def layer(self, i: int) -> LayerCache:
        """Decoder layer i's view of the cache for the next step."""
        past = self.self_kv[i] if self.self_kv else None
        mask = None
        if self.starts is not None:  # (rows, 1, 1, length + 1): the slot of the step itself is always valid
            mask = (torch.arange(self.length + 1, device=self.starts.device) >= self.starts[:, None])[:, None, None]
        return LayerCache(self.memory_kv[i], self.src_mask, past, self.past_rows, mask, self.admitted)

    def positions(self) -> int | torch.Tensor:
        """The position of each row's next token: cache.length, or (rows,) when rows were admitted later."""
        return self.length if self.starts is None else self.length - self.starts

    def advance(self, self_kv: list[KeyValue], new_len: int) -> None:
        """After a step of new_len positions: keep every layer's keys/values (LayerCache.extend's
        result, the pending reorder applied) and count the positions. Assigns, never mutates a list,
        so a shallow copy of the cache stays as it was."""
        self.self_kv, self.past_rows, self.admitted = self_kv, None, 0
        self.length += new_len

    def reorder(self, rows: torch.Tensor, sentences: torch.Tensor | None = None) -> None:
        """In place: the target keys/values become rows `rows` (beam search: the prefixes kept, any
        number per sentence; greedy search: the rows still decoding), applied by the next step
        together with its append (one copy); the memory keeps one row per sentence, shared by that
        sentence's rows (cross-attention folds them into its queries), and drops the sentences not in
        `sentences` now."""
        self.past_rows = rows if self.past_rows is None else self.past_rows[rows]
        if self.starts is not None:
            self.starts = self.starts.index_select(0, rows)
        if sentences is not None:
            self.memory_kv = [kv.select(sentences) for kv in self.memory_kv]
            self.src_mask = self.src_mask.index_select(0, sentences)

    def admit(self, other: "DecoderCache", rows_per_sentence: int, rows_now: int) -> None:
        """Add the sentences of `other` (fresh from encode(), nothing decoded yet) after this cache's
        rows_now decoder rows, each with rows_per_sentence rows that start now: their past slots are
        masked and their positions start at 0. The source length is padded to the longer of the two.
        The new rows' (zero) past is written by the next step's copy (LayerCache.extend)."""
        rows = other.src_mask.size(0) * rows_per_sentence
        width = max(self.src_mask.size(-1), other.src_mask.size(-1))
        self.memory_kv = [a.cat(b, width) for a, b in zip(self.memory_kv, other.memory_kv)]
        self.src_mask = torch.cat([_pad_keys(self.src_mask, width, False), _pad_keys(other.src_mask, width, False)])
        if self.length == 0:  # nothing decoded yet: every row starts together
            return
        self.admitted += rows
        device = self.src_mask.device
        old = self.starts if self.starts is not None else torch.zeros(rows_now, dtype=torch.long, device=device)
        self.starts = torch.cat([old, torch.full((rows,), self.length, dtype=torch.long, device=device)])

    def compact(self) -> None:
        """Forget the self-attention slots no row reads any more (before every row's start; views,
        no copy) and the source columns every sentence pads, so a long-lived session does not grow."""
        if self.starts is not None and self.starts.numel() and not self.admitted:
            drop = int(self.starts.min())
            if drop >= max(8, self.length // 4):  # rarely: the step after reads a strided view
                self.self_kv = [KeyValue(kv.k[:, :, drop:], kv.v[:, :, drop:]) for kv in self.self_kv]
                self.starts, self.length = self.starts - drop, self.length - drop
        used = int(self.src_mask.reshape(self.src_mask.size(0), -1).any(0).nonzero().max()) + 1
        if used < self.src_mask.size(-1):
            self.memory_kv = [KeyValue(kv.k[:, :, :used], kv.v[:, :, :used]) for kv in self.memory_kv]
            self.src_mask = self.src_mask[..., :used]


def _pad_keys(x: torch.Tensor, width: int, value) -> torch.Tensor:
    """x padded along its last axis (the keys) to `width`."""
    missing = width - x.size(-1)
    if not missing:
        return x
    return torch.cat([x, x.new_full((*x.shape[:-1], missing), value)], dim=-1)
