"""Prepared splits -> batches of padded id tensors, formed by tokens from length buckets.

The order of an epoch is a pure function of (seed, epoch), so a run resumed at batch i of epoch e
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from data.errors import DataError
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    import datasets


def token_groups(order: Sequence[int], widths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Cut `order` into consecutive groups whose padded size (rows x widest row) stays within
    max_tokens; a row wider than max_tokens alone still forms a group of one."""
    groups, current, widest = [], [], 0
    for row in order:
        w = max(widest, int(widths[row]))
        if current and w * (len(current) + 1) > max_tokens:
            groups.append(current)
            current, w = [], int(widths[row])
        current.append(row)
        widest = w
    if current:
        groups.append(current)
    return groups


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
    """One side of a split: the flat id array and row offsets, read zero-copy from the Arrow file."""

    def __init__(self, ds: datasets.Dataset, column: str) -> None:
        table = ds.select_columns([column]).with_format("arrow")[:]
        array = table[column].combine_chunks()
        self.values = array.values.to_numpy(zero_copy_only=False)
        self.offsets = array.offsets.to_numpy()
        self.lengths = np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]


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
        self.src = TokenIds(ds, "src_ids")
        self.tgt = TokenIds(ds, "tgt_ids")
        self.max_tokens = max_tokens
        self.size = len(self.src.lengths)
        # the padded width a sentence needs: the longer side, + </s> (source) or <s>/</s> (target)
        self.widths = np.maximum(self.src.lengths, self.tgt.lengths) + 1
        longest = int(self.widths.max()) if self.size else 0
        if longest > max_tokens:
            raise DataError(f"--max-tokens {max_tokens} is smaller than the longest pair "
                            f"({longest} tokens with specials): use at least {longest}")

    def plan(self, seed: int | None, epoch: int = 0) -> list[np.ndarray]:
        """Row indices of each batch. seed None: sorted by length, in order (evaluation)."""
        if seed is None:
            order = np.lexsort((self.tgt.lengths, self.src.lengths))
        else:
            rng = np.random.default_rng([seed, epoch])
            shuffled = rng.permutation(self.size)  # random order inside each length bucket
            order = shuffled[np.argsort(self.widths[shuffled], kind="stable")]
        batches = [np.asarray(g) for g in token_groups(order.tolist(), self.widths, self.max_tokens)]
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

    def epoch(self, seed: int | None, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, from batch number `start` on."""
        for rows in self.plan(seed, epoch)[start:]:
            yield self.make(rows)


def load_split(prepared: Path, split: str) -> "datasets.Dataset":
    import datasets

    try:
        dd = datasets.load_from_disk(str(prepared / "dataset"))
    except FileNotFoundError:
        raise DataError(f"{prepared}: no dataset/ directory (is this the output of 'prepare'?)") from None
    if split not in dd:
        raise DataError(f"{prepared}: no '{split}' split (has {', '.join(dd)})")
    return dd[split]
