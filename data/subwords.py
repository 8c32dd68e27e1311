"""BPE-dropout (Provilkov et al., 2020): every training epoch sees its own segmentation of the pairs.

The BPE of `prepare` merges a word's characters by its merge list, always the same way; BPE-dropout
skips each merge with probability p, so "▁Nähe" may come as "▁Nä" "he" one epoch and "▁N" "ä" "he" the
next. The model meets the words of the corpus cut many ways: a regulariser for small corpora.
Validation, test and translation keep the plain segmentation.

The segmentation is `tokenizers`' own (its BPE model's `dropout`), which draws from an unseeded
random source: so an epoch's segmentation is written once, when the epoch starts, under
RUN/subwords/epoch-NNNNNN/ (the ids of each side, flat, and where each row starts), and read in place
from there by that epoch's batches, by a resumed run and by every rank of a distributed one. The files
of epochs older than every checkpoint kept are deleted. The text of a pair is its plain ids decoded;
a row whose text does not encode back to those ids (an <unk> in it), or whose new segmentation
would be longer than the run allows, keeps its plain ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from data.batching import SplitBatches, TokenIds
from data.errors import DataError
from data.tokenizer import UNK_ID, Tokenizers, encode_batch, text_only
from transformer.errors import named
from transformer.files import atomic_directory

CHUNK = 20_000  # rows decoded and encoded at a time: memory stays bounded whatever the corpus size
SIDES = ("src", "tgt")


def check_dropout(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise DataError(f"{named('bpe_dropout')} must be in [0, 1) (0 = off), got {p}", "bpe_dropout")


def dropout_tokenizer(tok: Tokenizer, p: float) -> Tokenizer:
    """A copy of a BPE tokenizer that skips each merge with probability p."""
    copy = Tokenizer.from_str(tok.to_str())
    if type(copy.model).__name__ != "BPE":
        raise DataError(f"{named('bpe_dropout')} needs a BPE tokenizer; this run's is "
                        f"{type(copy.model).__name__} (an imported model's): train without it", "bpe_dropout")
    copy.model.dropout = p
    return text_only(copy)


class EpochIds:
    """One side of an epoch's segmentation, read in place (the interface of batching.TokenIds)."""

    def __init__(self, directory: Path, side: str) -> None:
        self.offsets = np.fromfile(directory / f"{side}.offsets", dtype=np.int64)  # (rows + 1,)
        size = int(self.offsets[-1]) if len(self.offsets) else 0
        self.values = np.memmap(directory / f"{side}.ids", dtype=np.int32, mode="r", shape=(size,)) if size \
            else np.zeros(0, np.int32)
        self.lengths = np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return np.asarray(self.values[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)


def _rows(ids: TokenIds, start: int, stop: int) -> list[list[int]]:
    return [ids.row(i).tolist() for i in range(start, stop)]


class Segmenter:
    """Writes and reads each epoch's BPE-dropout segmentation of a split (see the module's text).
    `longest`: the most tokens a side of a pair may have (the run's token and position limits)."""

    def __init__(self, plain: SplitBatches, toks: Tokenizers, p: float, longest: int, directory: Path) -> None:
        check_dropout(p)
        self.plain, self.toks, self.longest, self.directory = plain, toks, longest, directory
        drop = dropout_tokenizer(toks.src, p)
        self.dropping = {"src": drop, "tgt": drop if toks.joint else dropout_tokenizer(toks.tgt, p)}
        self._stable: dict[str, np.ndarray] = {}  # side -> rows whose decoded text encodes back to their ids

    def path(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch:06d}"

    def ready(self, epoch: int) -> None:
        """Write the epoch's segmentation unless it is there (rank 0 of a run, before the epoch)."""
        if not self.path(epoch).is_dir():
            with atomic_directory(self.path(epoch)) as tmp:
                for side in SIDES:
                    self._write_side(side, tmp)

    def load(self, epoch: int) -> tuple[EpochIds, EpochIds]:
        if not self.path(epoch).is_dir():
            raise DataError(f"{self.path(epoch)}: the BPE-dropout segmentation of epoch {epoch} is missing")
        return EpochIds(self.path(epoch), "src"), EpochIds(self.path(epoch), "tgt")

    def prune(self, oldest: int) -> None:
        """Delete the segmentations of epochs before `oldest` (no checkpoint kept starts in them)."""
        for d in self.directory.glob("epoch-*"):
            if d.name[6:].isdigit() and int(d.name[6:]) < oldest:
                shutil.rmtree(d, ignore_errors=True)

    def _write_side(self, side: str, tmp: Path) -> None:
        lengths = []
        with open(tmp / f"{side}.ids", "wb") as out:
            for start in range(0, self.plain.size, CHUNK):
                for r in self._segment(side, start, min(start + CHUNK, self.plain.size)):
                    np.asarray(r, dtype=np.int32).tofile(out)
                    lengths.append(len(r))
        np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64).tofile(tmp / f"{side}.offsets")

    def _segment(self, side: str, start: int, stop: int) -> list[list[int]]:
        """Rows start..stop of one side in a new segmentation (a row that cannot be re-segmented or
        would grow too long keeps its plain ids)."""
        plain = _rows(getattr(self.plain, side), start, stop)
        texts = self.plain_tokenizer(side).decode_batch(plain, skip_special_tokens=False)
        new = encode_batch(self.dropping[side], texts)
        stable = self.stable(side)[start:stop]
        return [n if ok and len(n) <= self.longest else p for p, n, ok in zip(plain, new, stable)]

    def plain_tokenizer(self, side: str) -> Tokenizer:
        return self.toks.src if side == "src" else self.toks.tgt

    def stable(self, side: str) -> np.ndarray:
        """(rows,) True where the row's decoded text encodes back to its plain ids (checked once)."""
        if side not in self._stable:
            ids: TokenIds = getattr(self.plain, side)
            tok, ok = self.plain_tokenizer(side), []
            for start in range(0, self.plain.size, CHUNK):
                plain = _rows(ids, start, min(start + CHUNK, self.plain.size))
                again = encode_batch(tok, tok.decode_batch(plain, skip_special_tokens=False))
                ok += [a == p and UNK_ID not in p for a, p in zip(again, plain)]
            self._stable[side] = np.asarray(ok, dtype=bool)
        return self._stable[side]


class DropoutSplit:
    """Training batches (the interface of SplitBatches' plan/epoch) whose every epoch is planned and
    made from that epoch's BPE-dropout segmentation."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self._epoch: tuple[int, SplitBatches] | None = None

    def ready(self, epoch: int) -> None:
        self.segmenter.ready(epoch)

    def of_epoch(self, epoch: int) -> SplitBatches:
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self.segmenter.plain.with_ids(*self.segmenter.load(epoch)))
        return self._epoch[1]

    def plan(self, seed: int | None, epoch: int = 0) -> list[np.ndarray]:
        return self.of_epoch(epoch).plan(seed, epoch)

    def epoch(self, seed: int | None, epoch: int = 0, start: int = 0, rank: int = 0, ranks: int = 1):
        return self.of_epoch(epoch).epoch(seed, epoch, start, rank, ranks)
