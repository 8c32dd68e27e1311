"""Cleaning a split: encode both sides, classify each pair (kept or why dropped), count and describe."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import datasets
import numpy as np

from data.corpus import Report
from data.errors import DataError
from data.tokenizer import UNK_ID, Tokenizers, encode_batch

if TYPE_CHECKING:
    from data.prepare import PrepareOptions

REASONS = ("kept", "empty", "too long", "length ratio", "duplicate")
CHARS_PER_TOKEN_LIMIT = 50  # a line longer than max_tokens * this is too long without tokenizing it
SHARD_ROWS = 50_000


@dataclass
class SplitStats:
    read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    src_len: dict[str, float] = field(default_factory=dict)  # mean, median, p95, max (tokens)
    tgt_len: dict[str, float] = field(default_factory=dict)
    src_unk: float = 0.0  # share of <unk> among kept source tokens
    tgt_unk: float = 0.0


def _length_stats(lengths: np.ndarray) -> dict[str, float]:
    if lengths.size == 0:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0.0}
    return {"mean": round(float(lengths.mean()), 2), "median": float(np.median(lengths)),
            "p95": round(float(np.percentile(lengths, 95)), 2), "max": float(lengths.max())}


def column(ds: datasets.Dataset, name: str) -> np.ndarray:
    """One numeric column as a numpy array, read as Arrow (no per-row Python objects)."""
    return ds.select_columns([name]).with_format("arrow")[:][name].to_numpy()


ENCODED = datasets.Features({
    "src": datasets.Value("string"), "tgt": datasets.Value("string"),
    "src_ids": datasets.Sequence(datasets.Value("int32")),
    "tgt_ids": datasets.Sequence(datasets.Value("int32")),
    "src_len": datasets.Value("int32"), "tgt_len": datasets.Value("int32"),
    "reason": datasets.Value("int8"), "src_unk": datasets.Value("int32"), "tgt_unk": datasets.Value("int32"),
})


def usable(src: str, tgt: str, max_tokens: int) -> bool:
    """Both sides non-empty and short enough in characters to be worth tokenizing."""
    limit = max_tokens * CHARS_PER_TOKEN_LIMIT
    return bool(src) and bool(tgt) and len(src) <= limit and len(tgt) <= limit


TRAIN_ENCODED = datasets.Features({k: v for k, v in ENCODED.items() if k not in ("src", "tgt")})


def _encode_and_classify(batch: dict, toks: Tokenizers, max_tokens: int, max_ratio: float | None) -> dict:
    out = {k: [] for k in ("src_ids", "tgt_ids", "src_len", "tgt_len", "reason", "src_unk", "tgt_unk")}
    ok = [usable(s, t, max_tokens) for s, t in zip(batch["src"], batch["tgt"])]
    src_ids = iter(encode_batch(toks.src, [s for s, k in zip(batch["src"], ok) if k]))
    tgt_ids = iter(encode_batch(toks.tgt, [t for t, k in zip(batch["tgt"], ok) if k]))
    for s, t, k in zip(batch["src"], batch["tgt"], ok):
        si, ti = (next(src_ids), next(tgt_ids)) if k else ([], [])
        if not s or not t or not (si and ti) and k:
            reason = 1
        elif not k or len(si) > max_tokens or len(ti) > max_tokens:
            reason = 2
        elif max_ratio is not None and max(len(si), len(ti)) > max_ratio * min(len(si), len(ti)):
            reason = 3
        else:
            reason = 0
        out["src_ids"].append(si)
        out["tgt_ids"].append(ti)
        out["src_len"].append(len(si))
        out["tgt_len"].append(len(ti))
        out["reason"].append(reason)
        out["src_unk"].append(si.count(UNK_ID))
        out["tgt_unk"].append(ti.count(UNK_ID))
    return out


def encode_split(ds: datasets.Dataset, split: str, toks: Tokenizers, opts: "PrepareOptions",
                 report: Report) -> datasets.Dataset:
    ratio = opts.max_ratio if split == "train" else None
    shards = max(1, -(-ds.num_rows // SHARD_ROWS))
    parts = []
    for i in range(shards):
        part = ds.shard(shards, i, contiguous=True)
        text = split != "train"  # train keeps ids only; validation/test keep text for BLEU references
        parts.append(part.map(
            _encode_and_classify, batched=True, batch_size=1000,
            features=ENCODED if text else TRAIN_ENCODED, remove_columns=None if text else ["src", "tgt"],
            fn_kwargs={"toks": toks, "max_tokens": opts.max_tokens, "max_ratio": ratio},
            num_proc=opts.num_proc if opts.num_proc > 1 and part.num_rows > 1000 else None,
            new_fingerprint=f"encode-{split}-{i}-{shards}", desc=None))
        report(f"encoding {split}", sum(p.num_rows for p in parts), ds.num_rows)
    return datasets.concatenate_datasets(parts)


def mark_duplicates(ds: datasets.Dataset) -> np.ndarray:
    """reason codes with repeated pairs (same ids on both sides) after their first occurrence marked 4."""
    reasons = column(ds, "reason").copy()
    seen: set[bytes] = set()
    row = 0
    for batch in ds.select_columns(["src_ids", "tgt_ids"]).iter(batch_size=10_000):
        for s, t in zip(batch["src_ids"], batch["tgt_ids"]):
            if reasons[row] == 0:
                key = hashlib.blake2b(repr((s, t)).encode(), digest_size=12).digest()
                if key in seen:
                    reasons[row] = 4
                seen.add(key)
            row += 1
    return reasons


def filter_split(ds: datasets.Dataset, split: str, opts: "PrepareOptions") -> tuple[datasets.Dataset, SplitStats]:
    reasons = mark_duplicates(ds) if opts.dedup and split == "train" else column(ds, "reason")
    counts = np.bincount(reasons.astype(np.int64), minlength=len(REASONS))
    stats = SplitStats(read=ds.num_rows, kept=int(counts[0]),
                       dropped={name: int(counts[i]) for i, name in enumerate(REASONS) if i})
    if stats.kept == 0:
        raise DataError(f"the {split} split is empty after filtering: {stats.read} pairs read, dropped "
                        + ", ".join(f"{v} {k}" for k, v in stats.dropped.items() if v))
    keep = reasons == 0  # statistics from whole columns of the unselected split (no index mapping)
    src_len, tgt_len = column(ds, "src_len")[keep], column(ds, "tgt_len")[keep]
    stats.src_len, stats.tgt_len = _length_stats(src_len), _length_stats(tgt_len)
    stats.src_unk = round(float(column(ds, "src_unk")[keep].sum()) / max(1, int(src_len.sum())), 6)
    stats.tgt_unk = round(float(column(ds, "tgt_unk")[keep].sum()) / max(1, int(tgt_len.sum())), 6)
    kept = ds.select(np.flatnonzero(keep)) if stats.kept < ds.num_rows else ds
    return kept.remove_columns(["reason", "src_unk", "tgt_unk"]), stats
