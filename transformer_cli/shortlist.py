"""A model's vocabulary shortlist: made once from parallel data into RUN/shortlist.safetensors, read
by load_run(..., shortlist=True) so that beam search and greedy decoding score only the target tokens
likely for each batch's source (transformer/shortlist.py; counts in data/shortlist.py).

    make_shortlist("work/quality/de-en-40m", data="work/quality/m30k-de-en")     # prepare's output
    make_shortlist(run, src_file="train.de", tgt_file="train.en")                # or parallel text
    translator = load_run(run, shortlist=True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from data.errors import DataError
from data.shortlist import always_allowed, dice_candidates
from data.tokenizer import SPECIALS, Tokenizers
from transformer.checkpoint import CheckpointError, read_tensors
from transformer.files import atomic_write
from transformer.shortlist import Shortlist

from transformer_cli.errors import RunError, named

SHORTLIST_FILE = "shortlist.safetensors"
FORMAT = 1
MAX_K = 1000
MAX_FREQUENT = 100_000


@dataclass(frozen=True)
class ShortlistReport:
    """What make_shortlist wrote."""

    path: Path
    pairs: int  # sentence pairs counted
    k: int  # candidates per source token
    frequent: int  # most frequent target tokens every batch keeps
    candidates: int  # (source token, target token) entries stored


def make_shortlist(run_dir: str | Path, data: str | Path | None = None, src_file: str | Path | None = None,
                   tgt_file: str | Path | None = None, k: int = 20, frequent: int = 100) -> ShortlistReport:
    """Count which target tokens go with each source token over parallel data (the training split of
    `data`, a directory made by prepare with this model's tokenizer, or the lines of src_file and
    tgt_file) and write RUN/shortlist.safetensors: each source token's k target tokens of highest
    Dice coefficient, and the `frequent` most frequent target tokens. Every problem is a RunError."""
    from transformer_cli.translator import load_run

    run_dir = Path(run_dir)
    if not 1 <= k <= MAX_K:
        raise RunError(f"{named('k')} must be between 1 and {MAX_K}, got {k}", "k")
    if not 0 <= frequent <= MAX_FREQUENT:
        raise RunError(f"{named('frequent')} must be between 0 and {MAX_FREQUENT}, got {frequent}", "frequent")
    if (data is None) == (src_file is None and tgt_file is None) or (src_file is None) != (tgt_file is None):
        raise RunError(f"give either {named('data')} (a directory made by prepare) or both {named('src_file')} "
                       f"and {named('tgt_file')}", "data", "src_file", "tgt_file")
    translator = load_run(run_dir, pack=False)
    config = translator.model.config
    try:
        pairs = _prepared_pairs(Path(data), translator.toks) if data is not None else \
            _text_pairs(translator, Path(src_file), Path(tgt_file))
        counted = dice_candidates(pairs, config.src_vocab_size, config.tgt_vocab_size, k)
    except DataError as e:
        raise RunError.wrap(e) from None
    if counted.pairs == 0:
        raise RunError(f"{data or src_file}: no sentence pairs to count", "data" if data else "src_file")
    tensors = {"offsets": torch.from_numpy(counted.offsets), "targets": torch.from_numpy(counted.targets),
               "always": torch.from_numpy(always_allowed(counted.target_counts, frequent))}
    meta = {"format": str(FORMAT), "k": str(k), "frequent": str(frequent), "pairs": str(counted.pairs),
            "tokenizer_fingerprint": translator.toks.fingerprint(),
            "source": json.dumps(str(data) if data is not None else [str(src_file), str(tgt_file)])}
    from safetensors.torch import save_file

    path = run_dir / SHORTLIST_FILE
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    except OSError as e:
        raise RunError(f"{path}: cannot write ({e.strerror or e})") from None
    return ShortlistReport(path, counted.pairs, k, frequent, len(counted.targets))


def _prepared_pairs(data: Path, toks: Tokenizers) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The training split's id rows of a prepared directory whose tokenizer is the model's."""
    from data.batching import TokenIds, load_split

    if not data.is_dir():
        raise DataError(f"{data}: directory not found (give a directory made by 'prepare')", "data")
    if Tokenizers.load(data).fingerprint() != toks.fingerprint():
        raise DataError(f"{data}: its tokenizer is not the model's: the shortlist must count the model's own "
                        "token ids (use the directory the model was trained from, or --src-file/--tgt-file)")
    split = load_split(data, "train")
    src, tgt = TokenIds(split, "src_ids"), TokenIds(split, "tgt_ids")
    return ((src.row(i), tgt.row(i)) for i in range(len(src.lengths)))


def _text_pairs(translator, src_file: Path, tgt_file: Path, chunk: int = 10_000
                ) -> Iterator[tuple[list[int], list[int]]]:
    """Parallel text files encoded with the model's tokenizers, a chunk of lines at a time; files of
    different lengths are an error naming both counts."""
    from itertools import islice, zip_longest

    from data.textfiles import check_input_file, read_lines

    for path, param in ((src_file, "src_file"), (tgt_file, "tgt_file")):
        check_input_file(path, param)
    lines = zip_longest(read_lines(src_file), read_lines(tgt_file))
    done = 0
    while block := list(islice(lines, chunk)):
        if any(s is None or t is None for s, t in block):
            short = src_file if any(s is None for s, _ in block) else tgt_file
            raise DataError(f"{src_file} and {tgt_file} have different numbers of lines ({short} ends after line "
                            f"{done + sum(1 for pair in block if None not in pair)})")
        done += len(block)
        yield from zip(translator.encode([s for s, _ in block]).ids, translator.target_ids([t for _, t in block]))


def check_shortlist_search(options) -> None:
    """A shortlist serves beam search and greedy decoding; sampling draws from the whole vocabulary
    (its draws are keyed by vocabulary position), so it is refused (RunError)."""
    if options.sampling:
        raise RunError("sampling draws from the whole vocabulary: it does not take a shortlist (drop "
                       f"{named('shortlist')} or {named('sampling_topk')}/{named('sampling_topp')})",
                       "shortlist", "sampling_topk", "sampling_topp")


def load_shortlist(run_dir: Path, toks: Tokenizers, src_vocab: int, tgt_vocab: int) -> Shortlist:
    """RUN/shortlist.safetensors checked against the model it is for; a RunError naming the file and
    what to do when it is missing, foreign or damaged."""
    path = Path(run_dir) / SHORTLIST_FILE
    if not path.exists():
        raise RunError(f"{run_dir}: no {SHORTLIST_FILE}; make one with 'transformer-cli shortlist --model "
                       f"{run_dir} --data PREPARED' (or --src-file/--tgt-file)", "shortlist")
    from safetensors import safe_open

    try:
        tensors = read_tensors(path)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (CheckpointError, OSError) as e:
        raise RunError(f"{e}", "shortlist") from None
    if meta.get("tokenizer_fingerprint") != toks.fingerprint():
        raise RunError(f"{path}: made for another tokenizer than this model's; make it again with "
                       "'transformer-cli shortlist'", "shortlist")
    try:
        return _checked(tensors, src_vocab, tgt_vocab)
    except ValueError as e:
        raise RunError(f"{path}: damaged shortlist ({e}); make it again with 'transformer-cli shortlist'",
                       "shortlist") from None


def _checked(tensors: dict[str, torch.Tensor], src_vocab: int, tgt_vocab: int) -> Shortlist:
    """A Shortlist from the file's tensors, every index in range (ValueError naming what is not)."""
    if set(tensors) != {"offsets", "targets", "always"}:
        raise ValueError(f"tensors {sorted(tensors)}, expected always, offsets, targets")
    if any(t.dtype != torch.int64 or t.dim() != 1 for t in tensors.values()):
        raise ValueError("tensors must be 1-D int64")
    offsets, targets, always = tensors["offsets"], tensors["targets"], tensors["always"]
    if len(offsets) != src_vocab + 1 or int(offsets[0]) != 0 or int(offsets[-1]) != len(targets) \
            or bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"offsets do not index {len(targets)} candidates for {src_vocab} source tokens")
    for name, ids in (("targets", targets), ("always", always)):
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= tgt_vocab):
            raise ValueError(f"{name} outside the target vocabulary of {tgt_vocab}")
    if not set(range(len(SPECIALS))) <= set(always.tolist()):
        raise ValueError("the special tokens are not always allowed")
    return Shortlist(offsets, targets, always)
