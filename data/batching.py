"""Prepared splits -> batches of padded id tensors, formed by tokens from length buckets.

The order of an epoch is a pure function of (seed, epoch), so a run resumed at batch i of epoch e
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from data.errors import DataError
from transformer.errors import named
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    import datasets


def group_ends(widths: np.ndarray, max_tokens: int) -> np.ndarray:
    """Cut rows (their padded widths, in batch order) into consecutive groups whose padded size
    (rows x widest row) stays within max_tokens; a row wider than max_tokens alone still forms a
    group of one. Returns where each group after the first starts. Walks the widths in slices, so
    no Python list of a whole split is ever built."""
    ends, count, widest = [], 0, 0
    for start in range(0, len(widths), 1 << 16):
        for i, row_width in enumerate(np.asarray(widths[start : start + (1 << 16)]).tolist(), start):
            w = max(widest, row_width)
            if count and w * (count + 1) > max_tokens:
                ends.append(i)
                count, w = 0, row_width
            count += 1
            widest = w
    return np.asarray(ends, dtype=np.int64)


def token_groups(order: Sequence[int], widths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """group_ends over rows `order` of `widths`, as lists of row numbers."""
    if len(order) == 0:
        return []
    order = np.asarray(order, dtype=np.int64)
    return [g.tolist() for g in np.split(order, group_ends(np.asarray(widths)[order], max_tokens))]


@dataclass(frozen=True)
class Batch:
    src: torch.Tensor  # (batch, src_len) ids + </s>, right-padded with <pad>
    tgt_in: torch.Tensor  # (batch, tgt_len) <s> + ids
    tgt_out: torch.Tensor  # (batch, tgt_len) ids + </s>
    index: torch.Tensor  # (batch,) row of each sentence in its split

    @property
    def n_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.index)


class TokenIds:
    """One side of a split, read in place: each Arrow chunk's flat id array and row offsets are
    views of the memory-mapped dataset files (nothing is copied into Python or numpy memory; the
    pages are read from disk as batches need them). Only the row lengths are an array of their own."""

    def __init__(self, ds: datasets.Dataset, column: str) -> None:
        table = ds.select_columns([column]).with_format("arrow")[:]
        self.values: list[np.ndarray] = []  # per chunk: the ids of all its rows, one after another
        self.offsets: list[np.ndarray] = []  # per chunk: where each row starts in values (+ the end)
        for chunk in table[column].chunks:
            self.values.append(chunk.values.to_numpy(zero_copy_only=True))
            self.offsets.append(chunk.offsets.to_numpy(zero_copy_only=True))
        sizes = [len(o) - 1 for o in self.offsets]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # first row of each chunk
        self.lengths = np.concatenate([np.diff(o) for o in self.offsets]) if sizes else np.zeros(0, np.int64)

    def row(self, i: int) -> np.ndarray:
        c = int(np.searchsorted(self.starts, i, side="right")) - 1
        offsets, j = self.offsets[c], i - int(self.starts[c])
        return self.values[c][offsets[j] : offsets[j + 1]]


def pad_rows(rows: list[np.ndarray], prefix: int | None, suffix: int | None) -> torch.Tensor:
    extra = (prefix is not None) + (suffix is not None)
    out = np.full((len(rows), max(len(r) for r in rows) + extra), PAD_ID, dtype=np.int64)
    for i, r in enumerate(rows):
        start = 0
        if prefix is not None:
            out[i, 0], start = prefix, 1
        out[i, start : start + len(r)] = r
        if suffix is not None:
            out[i, start + len(r)] = suffix
    return torch.from_numpy(out)


class SplitBatches:
    """Token-bounded batches over one prepared split."""

    def __init__(self, ds: datasets.Dataset, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._use(TokenIds(ds, "src_ids"), TokenIds(ds, "tgt_ids"))

    def with_ids(self, src, tgt) -> "SplitBatches":
        """The same rows in another segmentation (src and tgt read like TokenIds: `lengths`, `row`)."""
        other = copy.copy(self)
        other._use(src, tgt)
        return other

    def ready(self, epoch: int) -> None:
        """Nothing to make before an epoch: the prepared segmentation serves every epoch."""

    def _use(self, src, tgt) -> None:
        self.src, self.tgt = src, tgt
        self.size = len(self.src.lengths)
        # the padded width a sentence needs: the longer side, + </s> (source) or <s>/</s> (target)
        self.widths = np.maximum(self.src.lengths, self.tgt.lengths) + 1
        longest = int(self.widths.max()) if self.size else 0
        if longest > self.max_tokens:
            raise DataError(f"{named('max_tokens')} {self.max_tokens} is smaller than the longest pair "
                            f"({longest} tokens with specials): use at least {longest}", "max_tokens")

    def plan(self, seed: int | None, epoch: int = 0) -> list[np.ndarray]:
        """Row indices of each batch. seed None: sorted by length, in order (evaluation)."""
        if seed is None:
            order = np.lexsort((self.tgt.lengths, self.src.lengths))
        else:
            rng = np.random.default_rng([seed, epoch])
            shuffled = rng.permutation(self.size)  # random order inside each length bucket
            order = shuffled[np.argsort(self.widths[shuffled], kind="stable")]
        batches = np.split(order, group_ends(self.widths[order], self.max_tokens)) if len(order) else []
        if seed is not None:
            perm = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def make(self, rows: np.ndarray) -> Batch:
        src = pad_rows([self.src.row(i) for i in rows], None, EOS_ID)
        tgt = [self.tgt.row(i) for i in rows]
        return Batch(src, pad_rows(tgt, BOS_ID, None), pad_rows(tgt, None, EOS_ID),
                     torch.from_numpy(np.asarray(rows, dtype=np.int64)))

    def rows_batches(self, rows: np.ndarray) -> Iterator[Batch]:
        """Batches over the given rows, sorted by length (evaluation on a sample)."""
        rows = np.asarray(rows)[np.argsort(self.widths[rows], kind="stable")]
        for group in token_groups(rows.tolist(), self.widths, self.max_tokens):
            yield self.make(np.asarray(group))

    def epoch(self, seed: int | None, epoch: int = 0, start: int = 0, rank: int = 0, ranks: int = 1
              ) -> Iterator[Batch]:
        """The batches of `epoch` from batch number `start` on; with ranks > 1, process `rank`'s share:
        every ranks-th batch of the same order, the uneven tail dropped so every rank takes as many."""
        plan = self.plan(seed, epoch)
        for rows in plan[start + rank : len(plan) - len(plan) % ranks : ranks]:
            yield self.make(rows)


def load_split(prepared: Path, split: str) -> "datasets.Dataset":
    import datasets

    try:
        dd = datasets.load_from_disk(str(prepared / "dataset"))
    except FileNotFoundError:
        raise DataError(f"{prepared}: no dataset/ directory (is this the output of 'prepare'?)") from None
    except (ValueError, RecursionError, KeyError, TypeError) as e:  # its state.json / dataset_info.json
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:100]
        raise DataError(f"{prepared / 'dataset'}: unreadable dataset metadata ({why}); run 'prepare' again") from None
    if split not in dd:
        raise DataError(f"{prepared}: no '{split}' split (has {', '.join(dd)})")
    return dd[split]
