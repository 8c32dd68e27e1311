"""Encoder, Decoder and the encoder-decoder Transformer (paper section 3.1, figure 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from transformer.attention import AttentionRecord, KeyValue
from transformer.config import ModelConfig
from transformer.embeddings import PositionalEncoding, TokenEmbedding
from transformer.layers import DecoderLayer, EncoderLayer, LayerNorm
from transformer.masks import padding_mask


@dataclass(frozen=True)
class AttentionMaps:
    """Every layer's attention, all heads kept: one AttentionRecord per layer, first layer first."""

    encoder: list[AttentionRecord]  # weights (batch, heads, src_len, src_len)
    decoder: list[AttentionRecord]  # masked self-attention, (batch, heads, tgt_len, tgt_len)
    cross: list[AttentionRecord]  # (batch, heads, tgt_len, src_len)


@dataclass
class DecoderCache:
    """State kept between decoding steps: the encoder output projected once per layer
    (memory_kv), the keys/values of the target positions so far (self_kv), and the source mask."""

    memory_kv: list[KeyValue]
    src_mask: torch.Tensor  # (batch, 1, 1, src_len)
    self_kv: list[KeyValue | None] = field(default_factory=list)
    length: int = 0  # target positions already decoded
    past_rows: torch.Tensor | None = None  # pending reorder: row i continues self_kv row past_rows[i]

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
        number per sentence), applied by the next decode step together with its append (one copy);
        the memory keeps one row per sentence, shared by that sentence's rows (cross-attention folds
        them into its queries), and drops the sentences not in `sentences`."""
        self.past_rows = rows if self.past_rows is None else self.past_rows[rows]
        if sentences is not None:
            self.memory_kv = [kv.select(sentences) for kv in self.memory_kv]
            self.src_mask = self.src_mask.index_select(0, sentences)


class Encoder(nn.Module):
    """N identical layers of self-attention + feed-forward (+ a final norm when pre-norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.attention_dropout, c.norm,
                         c.layer_norm_eps)
            for _ in range(c.n_encoder_layers)
        )
        self.final_norm = LayerNorm(c.d_model, c.layer_norm_eps) if c.norm == "pre" else None

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, list[AttentionRecord]]:
        records = []
        for layer in self.layers:
            x, record = layer(x, src_mask, need_weights)
            if record is not None:
                records.append(record)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, records


class Decoder(nn.Module):
    """N identical layers; every layer attends to the final encoder output (memory)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            DecoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.attention_dropout, c.norm,
                         c.layer_norm_eps)
            for _ in range(c.n_decoder_layers)
        )
        self.final_norm = LayerNorm(c.d_model, c.layer_norm_eps) if c.norm == "pre" else None

    def forward(self, y: torch.Tensor, cache: DecoderCache, need_weights: bool = False
                ) -> tuple[torch.Tensor, list[KeyValue], list[AttentionRecord], list[AttentionRecord]]:
        self_kv_out, self_records, cross_records = [], [], []
        past = cache.self_kv or [None] * len(self.layers)
        for layer, memory_kv, self_kv in zip(self.layers, cache.memory_kv, past):
            y, kv, self_rec, cross_rec = layer(y, memory_kv, cache.src_mask, self_kv, need_weights, cache.past_rows)
            self_kv_out.append(kv)
            if need_weights:
                self_records.append(self_rec)
                cross_records.append(cross_rec)
        if self.final_norm is not None:
            y = self.final_norm(y)
        return y, self_kv_out, self_records, cross_records


class Transformer(nn.Module):
    """The encoder-decoder Transformer. encode() once, decode() many times; forward() does both."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model, c.pad_id)
        self.tgt_embed = TokenEmbedding(c.tgt_vocab_size, c.d_model, c.pad_id) if not c.share_embeddings \
            else self.src_embed
        self.positions = PositionalEncoding(c.d_model, c.max_len, c.dropout)
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.generator = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)  # pre-softmax projection
        if not c.tie_output:
            nn.init.xavier_uniform_(self.generator.weight)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the target embedding with the output projection (and the source embedding)."""
        if self.config.share_embeddings:
            self.tgt_embed = self.src_embed
        if self.config.tie_output:
            self.generator.weight = self.tgt_embed.weight

    def encode(self, src: torch.Tensor, need_weights: bool = False
               ) -> tuple[DecoderCache, list[AttentionRecord]]:
        """src: (batch, src_len) ids -> a DecoderCache holding the memory projected for every
        decoder layer, and the encoder's attention records (empty unless need_weights)."""
        src_mask = padding_mask(src, self.config.pad_id)  # (batch, 1, 1, src_len)
        x = self.positions(self.src_embed(src))  # (batch, src_len, d_model)
        memory, records = self.encoder(x, src_mask, need_weights)  # (batch, src_len, d_model)
        memory_kv = [layer.cross_attn.project_kv(memory) for layer in self.decoder.layers]
        return DecoderCache(memory_kv=memory_kv, src_mask=src_mask), records

    def decode(self, tgt: torch.Tensor, cache: DecoderCache, need_weights: bool = False,
               keep: torch.Tensor | None = None) -> tuple[torch.Tensor, list[AttentionRecord], list[AttentionRecord]]:
        """tgt: (batch, new_len) ids that follow the cache.length positions already decoded.
        Returns logits (batch, new_len, tgt_vocab) and updates the cache in place. keep: a
        (batch, new_len) bool mask; then only those positions are projected, logits (n_keep, tgt_vocab)."""
        y = self.positions(self.tgt_embed(tgt), offset=cache.length)  # (batch, new_len, d_model)
        h, self_kv, self_records, cross_records = self.decoder(y, cache, need_weights)
        cache.self_kv, cache.past_rows = self_kv, None
        cache.length += tgt.size(1)
        if keep is not None:
            h = h[keep]  # (n_keep, d_model): the pre-softmax projection skips padding
        return self.generator(h), self_records, cross_records

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, AttentionMaps | None]:
        """Teacher forcing. src: (batch, src_len), tgt_in: (batch, tgt_len) starting with <s>.
        Returns logits (batch, tgt_len, tgt_vocab) and, if asked, every attention map; with keep
        ((batch, tgt_len) bool, the positions a loss will read) logits (n_keep, tgt_vocab)."""
        cache, enc_records = self.encode(src, return_attention)
        logits, self_records, cross_records = self.decode(tgt_in, cache, return_attention, keep)
        maps = AttentionMaps(enc_records, self_records, cross_records) if return_attention else None
        return logits, maps
