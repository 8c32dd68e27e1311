"""A lexical shortlist from parallel token ids: for each source token, the target tokens that most
often occur in the same sentence pairs (Dice coefficient), as Marian's lexical shortlists and
CTranslate2's vocabulary map are used. The model side (decoding over the shortlist only) is
transformer/shortlist.py; this module only counts.

Dice(s, t) = 2 c(s, t) / (c(s) + c(t)), where c counts the pairs a token occurs in (once per pair)
and c(s, t) the pairs both occur in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from data.tokenizer import SPECIALS

CHUNK = 10_000  # pairs counted at a time: memory grows with the distinct (s, t) pairs, not the corpus


@dataclass(frozen=True)
class Candidates:
    """Each source token's best target tokens, as compressed rows."""

    offsets: np.ndarray  # (src_vocab + 1,) int64: source token s has targets[offsets[s]:offsets[s + 1]]
    targets: np.ndarray  # (n,) int64 target ids, best first within each source token
    target_counts: np.ndarray  # (tgt_vocab,) int64: c(t), the pairs each target token occurs in
    pairs: int  # sentence pairs counted

    def first(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, targets) keeping each source token's k best candidates only."""
        lengths = np.minimum(np.diff(self.offsets), k)
        rank = np.arange(len(self.targets)) - np.repeat(self.offsets[:-1], np.diff(self.offsets))
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), self.targets[rank < k]


def dice_candidates(pairs: Iterable[tuple[np.ndarray, np.ndarray]], src_vocab: int, tgt_vocab: int, k: int
                    ) -> Candidates:
    """The k target tokens of highest Dice coefficient for every source token, over (source ids,
    target ids) pairs; ties go to the lower target id. A source token seen in no pair has none."""
    c_src, c_tgt = np.zeros(src_vocab, np.int64), np.zeros(tgt_vocab, np.int64)
    keys, counts, chunk, n = np.zeros(0, np.int64), np.zeros(0, np.int64), [], 0
    for src, tgt in pairs:
        s, t = np.unique(np.asarray(src, np.int64)), np.unique(np.asarray(tgt, np.int64))
        c_src[s] += 1
        c_tgt[t] += 1
        chunk.append((s[:, None] * tgt_vocab + t[None, :]).ravel())
        n += 1
        if len(chunk) == CHUNK:
            keys, counts = _merge(keys, counts, chunk)
            chunk = []
    keys, counts = _merge(keys, counts, chunk)
    s_of, t_of = keys // tgt_vocab, keys % tgt_vocab
    dice = 2.0 * counts / (c_src[s_of] + c_tgt[t_of])
    order = np.lexsort((t_of, -dice, s_of))  # by source token, then best first, then lower id
    starts = np.searchsorted(s_of[order], np.arange(src_vocab + 1)).astype(np.int64)
    offsets, targets = Candidates(starts, t_of[order], c_tgt, n).first(k)
    return Candidates(offsets, targets, c_tgt, n)


def _merge(keys: np.ndarray, counts: np.ndarray, chunk: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The (s, t) keys counted so far plus one chunk of pairs' keys: (distinct keys, counts)."""
    if not chunk:
        return keys, counts
    new, new_counts = np.unique(np.concatenate(chunk), return_counts=True)
    merged, inverse = np.unique(np.concatenate([keys, new]), return_inverse=True)
    return merged, np.bincount(inverse, weights=np.concatenate([counts, new_counts]),
                               minlength=len(merged)).astype(np.int64)


def always_allowed(target_counts: np.ndarray, frequent: int) -> np.ndarray:
    """The target ids every batch keeps: the `frequent` most frequent and the special tokens."""
    return np.union1d(most_frequent(target_counts, frequent), np.arange(len(SPECIALS))).astype(np.int64)


def most_frequent(target_counts: np.ndarray, n: int) -> np.ndarray:
    """The n target ids occurring in the most pairs (ties: lower id first)."""
    order = np.lexsort((np.arange(len(target_counts)), -target_counts))
    return np.sort(order[: min(n, len(order))]).astype(np.int64)
