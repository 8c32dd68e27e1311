"""--replace-unk: an <unk> in an output becomes the source token it attends to most (OpenNMT-py's
--replace_unk, CTranslate2's replace_unknowns).

The attention read is the last decoder layer's cross-attention, mean of its heads, in the
teacher-forced pass over the output (the weights that produced it, Translator.teacher_force); the
source token is taken as the text it covers in the source line, so a character the vocabulary does
not know (the source's own <unk>) is copied as itself, and a word-initial source piece stays word-initial.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer

from data.tokenizer import UNK_ID, text_only


def source_pieces(tok: Tokenizer, text: str) -> list[str]:
    """The source's pieces as the model reads them, an <unk> as the text it stands for (with the
    word-start mark when its neighbours' pieces put one before it)."""
    encoding = text_only(tok).encode(text, add_special_tokens=False)
    return [text[a:b] if i == UNK_ID else piece for i, piece, (a, b) in
            zip(encoding.ids, encoding.tokens, encoding.offsets)]


def most_attended(cross: torch.Tensor, src_len: int) -> list[int]:
    """For each output position, the source position (not </s>) it attends to most.
    cross: one layer's weights (heads, out_len, src_len + 1)."""
    return cross.float().mean(0)[:, :src_len].argmax(dim=-1).tolist()


def replaced_pieces(out_pieces: list[str], out_ids: list[int], src_pieces: list[str], cross: torch.Tensor) -> list[str]:
    """out_pieces with each <unk> (by id) replaced by the source piece its step attended to most."""
    if UNK_ID not in out_ids:
        return list(out_pieces)
    source = most_attended(cross, len(src_pieces))
    return [src_pieces[source[t]] if i == UNK_ID else p for t, (i, p) in enumerate(zip(out_ids, out_pieces))]


def pieces_text(tok: Tokenizer, pieces: list[str]) -> str:
    """Output pieces (no specials) as text, through the tokenizer's decoder."""
    return tok.decoder.decode(pieces) if tok.decoder is not None else "".join(pieces)
