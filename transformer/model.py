"""Encoder, Decoder and the encoder-decoder Transformer (paper section 3.1, figure 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transformer.attention import AttentionRecord
from transformer.cache import DecoderCache
from transformer.config import ModelConfig
from transformer.embeddings import PositionalEncoding, TokenEmbedding
from transformer.layers import decoder_layer, encoder_layer, final_norm
from transformer.masks import padding_mask
from transformer.packed import PackedLinear


@dataclass(frozen=True)
class AttentionMaps:
    """Every layer's attention, all heads kept: one AttentionRecord per layer, first layer first."""

    encoder: list[AttentionRecord]  # weights (batch, heads, src_len, src_len)
    decoder: list[AttentionRecord]  # masked self-attention, (batch, heads, tgt_len, tgt_len)
    cross: list[AttentionRecord]  # (batch, heads, tgt_len, src_len)


class Encoder(nn.Module):
    """N identical layers of self-attention + feed-forward (+ a final norm when pre-norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(encoder_layer(config) for _ in range(config.n_encoder_layers))
        self.final_norm = final_norm(config)

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
        self.layers = nn.ModuleList(decoder_layer(config) for _ in range(config.n_decoder_layers))
        self.final_norm = final_norm(config)

    def forward(self, y: torch.Tensor, cache: DecoderCache, need_weights: bool = False
                ) -> tuple[torch.Tensor, list[AttentionRecord], list[AttentionRecord]]:
        """y: (batch, new_len, d_model) the positions after the cache.length already decoded; each
        layer reads its past from the cache, which then advances by them. Returns (batch, new_len,
        d_model) and the self- and cross-attention records (empty unless need_weights)."""
        self_kv, self_records, cross_records = [], [], []
        for i, layer in enumerate(self.layers):
            y, kv, self_rec, cross_rec = layer(y, cache.layer(i), need_weights)
            self_kv.append(kv)
            if need_weights:
                self_records.append(self_rec)
                cross_records.append(cross_rec)
        cache.advance(self_kv, y.size(1))
        if self.final_norm is not None:
            y = self.final_norm(y)
        return y, self_records, cross_records


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
        self.generator = PackedLinear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)  # pre-softmax projection
        if c.output_bias:
            nn.init.zeros_(self.generator.bias)
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
        if not torch.is_grad_enabled():  # decoding reads it every step: heads-first in memory once, not a
            memory_kv = [kv.contiguous() for kv in memory_kv]  # strided view each step's matmul copies
        return DecoderCache(memory_kv=memory_kv, src_mask=src_mask), records

    def decode(self, tgt: torch.Tensor, cache: DecoderCache, need_weights: bool = False,
               keep: torch.Tensor | None = None) -> tuple[torch.Tensor, list[AttentionRecord], list[AttentionRecord]]:
        """tgt: (batch, new_len) ids that follow the cache.length positions already decoded.
        Returns logits (batch, new_len, tgt_vocab) and updates the cache in place. keep: a
        (batch, new_len) bool mask; then only those positions are projected, logits (n_keep, tgt_vocab)."""
        h, self_records, cross_records = self.decode_hidden(tgt, cache, need_weights)  # advances the cache
        if keep is not None:
            h = h[keep]  # (n_keep, d_model): the pre-softmax projection skips padding
        return self.generator(h), self_records, cross_records

    def decode_hidden(self, tgt: torch.Tensor, cache: DecoderCache, need_weights: bool = False
                      ) -> tuple[torch.Tensor, list[AttentionRecord], list[AttentionRecord]]:
        """decode() before the pre-softmax projection: the decoder's output (batch, new_len, d_model)
        for tgt (batch, new_len) ids, and the attention records; advances the cache."""
        y = self.positions(self.tgt_embed(tgt), offset=cache.positions())  # (batch, new_len, d_model)
        return self.decoder(y, cache, need_weights)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, AttentionMaps | None]:
        """Teacher forcing. src: (batch, src_len), tgt_in: (batch, tgt_len) starting with <s>.
        Returns logits (batch, tgt_len, tgt_vocab) and, if asked, every attention map; with keep
        ((batch, tgt_len) bool, the positions a loss will read) logits (n_keep, tgt_vocab)."""
        cache, enc_records = self.encode(src, return_attention)
        logits, self_records, cross_records = self.decode(tgt_in, cache, return_attention, keep)
        maps = AttentionMaps(enc_records, self_records, cross_records) if return_attention else None
        return logits, maps
