"""prepare(): corpus -> BPE tokenizer -> filtered, tokenized, memory-mapped splits + prepare.json.

Everything is written into a temporary sibling directory that is renamed into place at the end, so
an interrupted run never leaves a directory that looks complete.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import datasets

from data.cleaning import SplitStats, encode_split, filter_split, usable
from data.corpus import Report, Source, _no_report, load_corpus, local_inputs
from data.errors import DataError
from transformer.errors import named
from data.tokenizer import SPECIALS, Tokenizers, train_bpe
from data.versions import library_versions
from transformer.files import atomic_directory, sha256_file
from transformer.json_text import loads

DATASET_DIR = "dataset"
MANIFEST = "prepare.json"


@dataclass(frozen=True)
class PrepareOptions:
    dataset: str  # demo, a directory, a file, a prefix or a hub name
    src: str  # source language code
    tgt: str  # target language code
    config: str | None = None  # hub dataset configuration
    vocab_size: int = 8000  # BPE vocabulary size (per side when not joint)
    min_frequency: int = 2  # BPE merges need at least this many occurrences
    joint_vocab: bool = True  # one vocabulary for both sides
    max_tokens: int = 256  # drop pairs longer than this (tokens, either side)
    max_ratio: float = 3.0  # drop training pairs whose token-length ratio exceeds this
    dedup: bool = False  # drop repeated training pairs
    valid_size: int = 500  # pairs held out of train when the corpus has no validation split
    num_proc: int = 1  # processes for encoding
    seed: int = 0  # demo corpus and held-out split
    tokenizer: str | None = None  # a run directory (train's, or an imported model) whose tokenizer
    # encodes the corpus instead of a newly trained BPE; the vocabulary options then stay as they are


def fingerprint_inputs(source: Source, dd: datasets.DatasetDict) -> dict:
    if source.files:
        return {str(p): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for paths in source.files.values() for p in paths}
    h = hashlib.sha256()
    for split in sorted(dd):
        for batch in dd[split].iter(batch_size=10_000):
            h.update("\n".join(batch["src"]).encode())
            h.update("\n".join(batch["tgt"]).encode())
    return {"pairs_sha256": h.hexdigest()}


def arrange_splits(dd: datasets.DatasetDict, opts: PrepareOptions, source: Source
                   ) -> tuple[datasets.DatasetDict, dict]:
    """Make sure there is a train and a validation split; say what was done."""
    notes = {}
    splits = dict(dd)
    if "train" not in splits:
        only = "validation" if "validation" in splits else next(iter(splits))
        splits["train"] = splits.pop(only)
        notes["train"] = f"the corpus has no train split: its '{only}' split is used for training"
    if splits["train"].num_rows == 0:
        raise DataError(f"the corpus is empty: the train split of {source.name} has no pairs")
    if "validation" not in splits:
        n = splits["train"].num_rows
        held = min(opts.valid_size, n // 10)
        if held >= 1:
            parts = splits["train"].train_test_split(test_size=held, shuffle=True, seed=opts.seed)
            splits["train"], splits["validation"] = parts["train"], parts["test"]
            notes["validation"] = f"held out {held} random pairs of train (seed {opts.seed})"
    return datasets.DatasetDict(splits), notes


def _training_texts(train: datasets.Dataset, opts: PrepareOptions, side: str | None, report: Report):
    done = 0
    for batch in train.iter(batch_size=10_000):
        for s, t in zip(batch["src"], batch["tgt"]):
            if usable(s, t, opts.max_tokens):
                if side != "tgt":
                    yield s
                if side != "src":
                    yield t
        done += len(batch["src"])
        report("training tokenizer", done, train.num_rows)


def train_tokenizers(train: datasets.Dataset, opts: PrepareOptions, report: Report) -> Tokenizers:
    """A new BPE tokenizer (joint, or one per side) trained on the usable pairs of `train`."""
    if opts.joint_vocab:
        tok = train_bpe(_training_texts(train, opts, None, report), opts.vocab_size, opts.min_frequency)
        return Tokenizers(tok, tok)
    src = train_bpe(_training_texts(train, opts, "src", report), opts.vocab_size, opts.min_frequency)
    tgt = train_bpe(_training_texts(train, opts, "tgt", report), opts.vocab_size, opts.min_frequency)
    return Tokenizers(src, tgt)


def tokenizer_record(toks: Tokenizers, files: list[str], run_dir: str | None) -> dict:
    """What the manifest says of the tokenizer; `from_run` names the run whose tokenizer it is (None:
    trained here)."""
    fingerprint = toks.fingerprint()
    from_run = None if run_dir is None else {"path": str(Path(run_dir).resolve()), "fingerprint": fingerprint}
    normalizer = json.loads(toks.src.to_str()).get("normalizer") or {}
    return {"files": files, "joint": toks.joint, "fingerprint": fingerprint,
            "src_vocab_size": toks.src.get_vocab_size(), "tgt_vocab_size": toks.tgt.get_vocab_size(),
            "normalizer": normalizer.get("type", "none"), "specials": list(SPECIALS), "from_run": from_run}


def write_split(raw: datasets.Dataset, split: str, toks: Tokenizers, opts: PrepareOptions,
                directory: Path, report: Report) -> SplitStats:
    """Encode, filter and save one split, then let go of its memory maps before the next one."""
    encoded = encode_split(raw, split, toks, opts, report)
    del raw
    kept, stats = filter_split(encoded, split, opts)
    kept.save_to_disk(str(directory / split))
    del kept, encoded
    gc.collect()
    return stats


VOCABULARY_OPTIONS = ("vocab_size", "min_frequency", "joint_vocab")  # what a new BPE is trained with


def refuse_vocabulary_options(given: list[str]) -> None:
    """DataError naming the first of the vocabulary options `given` together with `tokenizer`: a run's
    tokenizer already fixes the vocabulary."""
    given = [name for name in VOCABULARY_OPTIONS if name in given]
    if given:
        raise DataError(f"{named(given[0])} cannot be used with {named('tokenizer')}: the run's tokenizer "
                        "fixes the vocabulary", given[0], "tokenizer")


def run_tokenizers(run_dir: Path) -> Tokenizers:
    """The tokenizer files of a run directory (tokenizer.json, or tokenizer.src.json + tokenizer.tgt.json),
    as `train` or an import wrote them; DataError naming `tokenizer` otherwise."""
    if not run_dir.is_dir():
        raise DataError(f"{named('tokenizer')} {run_dir}: not a directory (a run directory from 'train' or "
                        "an imported model is expected)", "tokenizer")
    try:
        return Tokenizers.load(run_dir)
    except DataError as e:
        raise DataError(f"{named('tokenizer')}: {e}", "tokenizer") from None


def check_options(opts: PrepareOptions) -> None:
    """The numbers of PrepareOptions (errors name the field); with `tokenizer`, the vocabulary options
    must keep their defaults."""
    if opts.tokenizer is not None:
        defaults = PrepareOptions("", "", "")
        refuse_vocabulary_options([n for n in VOCABULARY_OPTIONS if getattr(opts, n) != getattr(defaults, n)])
    for name in ("max_tokens", "max_ratio", "num_proc", "min_frequency", "vocab_size"):
        value = getattr(opts, name)
        if not (math.isfinite(value) and value >= 1):
            raise DataError(f"{named(name)} must be a number >= 1, got {value}", name)
    if opts.valid_size < 0:
        raise DataError(f"{named('valid_size')} must be >= 0, got {opts.valid_size}", "valid_size")


def check_output(out_dir: Path, overwrite: bool, inputs: list[Path] = ()) -> None:
    """Refuse an out_dir that cannot be a directory, that holds or lies inside the input corpus, or that
    overwrite would empty of something prepare did not write."""
    out, over = named("out_dir"), named("overwrite")
    for parent in [out_dir, *out_dir.parents]:
        if parent.exists() and not parent.is_dir():
            raise DataError(f"{out} {out_dir}: {parent} exists and is not a directory", "out_dir")
    real = out_dir.resolve()
    for path in inputs:
        p = path.resolve()
        if real == p or p in real.parents or real in p.parents:
            how = "is" if real == p else "contains" if real in p.parents else "is inside"
            raise DataError(f"{out} {out_dir} {how} the input {path}: choose an output outside the corpus", "out_dir")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise DataError(f"{out_dir} exists and is not empty (use {over} to replace it)", "overwrite")
    if not _made_by_prepare(out_dir):
        raise DataError(f"{over}: {out_dir} was not made by 'transformer-cli prepare' (no {MANIFEST}); "
                        "refusing to delete it", "overwrite")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUT_NAMES)
    if foreign:
        raise DataError(f"{over}: {out_dir} holds files prepare did not write ({', '.join(foreign[:5])}); "
                        f"move them away or choose another {out}", "overwrite", "out_dir")


OUTPUT_NAMES = {DATASET_DIR, MANIFEST, "tokenizer.json", "tokenizer.src.json", "tokenizer.tgt.json"}


def _made_by_prepare(directory: Path) -> bool:
    try:
        manifest = loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "format" in manifest and "tokenizer" in manifest


def remove_leftovers(out_dir: Path) -> None:
    """Hidden .tmp-PID / .old-PID directories (.partial-PID from older versions) of runs that were
    killed (their process is gone)."""
    for p in out_dir.parent.glob(f".{out_dir.name}.*-*"):
        kind, _, pid = p.name.rpartition("-")
        if kind.endswith((".tmp", ".partial", ".old")) and pid.isdigit() and not _alive(int(pid)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def prepare(opts: PrepareOptions, out_dir: Path, overwrite: bool = False,
            report: Report = _no_report) -> dict:
    """Run the whole pipeline into out_dir; returns the manifest written as prepare.json."""
    check_output(out_dir, overwrite, local_inputs(opts.dataset, opts.src, opts.tgt))
    check_options(opts)
    run_toks = run_tokenizers(Path(opts.tokenizer)) if opts.tokenizer else None  # read before the corpus
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # our own progress display replaces them; restored below
    try:
        with atomic_directory(out_dir) as tmp:  # renamed into place only when complete
            return prepare_into(tmp, opts, report, run_toks)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def prepare_into(tmp: Path, opts: PrepareOptions, report: Report, toks: Tokenizers | None = None) -> dict:
    """The pipeline's outputs written into the new directory `tmp`; returns the manifest. `toks`: the
    tokenizer to encode with (opts.tokenizer's, already read); None trains a new BPE."""
    dd, source = load_corpus(opts.dataset, opts.src, opts.tgt, tmp / ".cache", opts.config, opts.seed, report)
    dd, notes = arrange_splits(dd, opts, source)
    fingerprint = fingerprint_inputs(source, dd)
    toks = toks if toks is not None else train_tokenizers(dd["train"], opts, report)
    stats = {split: write_split(dd.pop(split), split, toks, opts, tmp / DATASET_DIR, report) for split in list(dd)}
    (tmp / DATASET_DIR / "dataset_dict.json").write_text(json.dumps({"splits": list(stats)}))
    files = toks.save(tmp)
    manifest = {
        "format": 1,
        "source": source.describe(),
        "src_lang": opts.src, "tgt_lang": opts.tgt,
        "options": dataclasses.asdict(opts),
        "notes": notes,
        "splits": {s: dataclasses.asdict(st) for s, st in stats.items()},
        "tokenizer": tokenizer_record(toks, files, opts.tokenizer),
        "input_fingerprint": fingerprint,
        "versions": library_versions("datasets", "tokenizers", "numpy"),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(tmp / ".cache", ignore_errors=True)
    return manifest
