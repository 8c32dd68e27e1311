"""The decoding cache: what encode() leaves for decode() and what every decode() step leaves for the next.

The cache owns its state: each decoder layer reads its past through layer(), and decode() stores
the step's keys/values with advance(). Beam search's reorder() only records which rows go on; the
next step applies it together with its append (one copy, LayerCache.extend) and advance() clears it.
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

    def extend(self, step_kv: KeyValue) -> KeyValue:
        """The self-attention keys/values this step attends to: the past (rows past_rows, in that
        order, when a reorder is pending) followed by step_kv, (batch, heads, new_len, d_k)."""
        return step_kv if self.past is None else self.past.append(step_kv, self.past_rows)


@dataclass
class DecoderCache:
    """State kept between decoding steps: the encoder output projected once per layer
    (memory_kv), the keys/values of the target positions so far (self_kv), and the source mask."""

    memory_kv: list[KeyValue]
    src_mask: torch.Tensor  # (batch, 1, 1, src_len)
    self_kv: list[KeyValue | None] = field(default_factory=list)
    length: int = 0  # target positions already decoded
    past_rows: torch.Tensor | None = None  # pending reorder: row i continues self_kv row past_rows[i]

    def layer(self, i: int) -> LayerCache:
        """Decoder layer i's view of the cache for the next step."""
        past = self.self_kv[i] if self.self_kv else None
        return LayerCache(self.memory_kv[i], self.src_mask, past, self.past_rows)

    def advance(self, self_kv: list[KeyValue], new_len: int) -> None:
        """After a step of new_len positions: keep every layer's keys/values (LayerCache.extend's
        result, the pending reorder applied) and count the positions. Assigns, never mutates a list,
        so a shallow copy of the cache stays as it was."""
        self.self_kv, self.past_rows = self_kv, None
        self.length += new_len

    def select(self, index: torch.Tensor) -> "DecoderCache":
        """Keep batch rows `index` of everything (greedy search drops the rows that finished)."""
        rows = index if self.past_rows is None else self.past_rows[index]
        return DecoderCache(
            memory_kv=[kv.select(index) for kv in self.memory_kv],
            src_mask=self.src_mask.index_select(0, index),
            self_kv=[kv.select(rows) if kv is not None else None for kv in self.self_kv],
            length=self.length,
        )

    def reorder(self, rows: torch.Tensor, sentences: torch.Tensor | None = None) -> None:
        """Beam search, in place: the target keys/values become rows `rows` (the prefixes kept, any
        number per sentence), applied by the next step together with its append (one copy);
        the memory keeps one row per sentence, shared by that sentence's rows (cross-attention folds
        them into its queries), and drops the sentences not in `sentences`."""
        self.past_rows = rows if self.past_rows is None else self.past_rows[rows]
        if sentences is not None:
            self.memory_kv = [kv.select(sentences) for kv in self.memory_kv]
            self.src_mask = self.src_mask.index_select(0, sentences)
