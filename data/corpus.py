"""Parallel corpora in, a datasets.DatasetDict of {"src", "tgt"} text pairs out.

Sources: the demo corpus, a directory in the {split}.{lang}[.gz] layout, two parallel files given as
a prefix (PREFIX.de + PREFIX.en), a TSV or JSONL file, a directory saved by datasets' save_to_disk, or
a Hugging Face Hub dataset. Local files go through Dataset.from_generator, which writes Arrow to disk
as it reads, so nothing is held in lists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import datasets

from data.demo import demo_splits
from data.errors import DataError
from transformer.errors import named
from data.textfiles import count_lines, read_lines
from transformer.json_text import loads

Report = Callable[[str, int, "int | None"], None]  # (stage, done, total)
_FILE = re.compile(r"^(?P<split>.+?)\.(?P<lang>[A-Za-z][A-Za-z_-]{0,15})(?P<gz>\.gz)?$")


def canonical_split(name: str) -> str | None:
    """Map corpus split names to train / validation / test (test_2016_flickr -> test, dev -> validation)."""
    n = name.lower()
    if n.startswith("train"):
        return "train"
    if n in ("val", "valid", "validation", "dev", "development") or n.startswith(("val_", "valid", "dev")):
        return "validation"
    if n.startswith(("test", "tst", "newstest")):
        return "test"
    return None


@dataclass
class Source:
    """What was read: a description for prepare.json and the files behind each split."""

    kind: str
    name: str
    files: dict[str, list[Path]] = field(default_factory=dict)

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name,
                "files": {s: [str(p) for p in ps] for s, ps in self.files.items()}}


def _no_report(stage: str, done: int, total: int | None) -> None:
    pass


def _counted(pairs: Iterator[dict], stage: str, report: Report) -> Iterator[dict]:
    """Pass pairs through, reporting progress every 10,000 and at the end."""
    n = 0
    for n, pair in enumerate(pairs, 1):
        if n % 10_000 == 0:
            report(stage, n, None)
        yield pair
    report(stage, n, n)


def _pairs_from_files(src_path: str, tgt_path: str) -> Iterator[dict]:
    src_p, tgt_p = Path(src_path), Path(tgt_path)
    for a, b in zip_longest(read_lines(src_p), read_lines(tgt_p)):
        if a is None or b is None:
            raise DataError(f"parallel files differ in length: {src_p} has {count_lines(src_p)} lines, "
                            f"{tgt_p} has {count_lines(tgt_p)}")
        yield {"src": a.strip(), "tgt": b.strip()}


def _pairs_from_tsv(path: str, src: str, tgt: str) -> Iterator[dict]:
    p = Path(path)
    columns = (0, 1)
    for lineno, line in enumerate(read_lines(p), 1):
        fields = line.split("\t")
        if lineno == 1 and src in fields and tgt in fields:
            columns = (fields.index(src), fields.index(tgt))  # a header row names the languages
            continue
        if len(fields) <= max(columns):
            raise DataError(f"{p}: line {lineno} has {len(fields)} tab-separated field(s), "
                            f"expected at least {max(columns) + 1}")
        yield {"src": fields[columns[0]].strip(), "tgt": fields[columns[1]].strip()}


def _pairs_from_jsonl(path: str, src: str, tgt: str) -> Iterator[dict]:
    p = Path(path)
    for lineno, line in enumerate(read_lines(p), 1):
        if not line.strip():
            continue
        try:
            record = loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: line {lineno} is not valid JSON ({e.msg})") from None
        pair = record.get("translation", record) if isinstance(record, dict) else None
        if not isinstance(pair, dict) or src not in pair or tgt not in pair:
            keys = sorted(pair) if isinstance(pair, dict) else type(record).__name__
            raise DataError(f"{p}: line {lineno} has no '{src}' and '{tgt}' fields (found {keys})")
        yield {"src": str(pair[src]).strip(), "tgt": str(pair[tgt]).strip()}


def _reading(reader: Callable[..., Iterator[dict]], args: dict, stage: str, report: Report) -> Iterator[dict]:
    yield from _counted(reader(**args), stage, report)


def _from_generator(reader: Callable, args: dict, stage: str, report: Report, cache_dir: Path
                    ) -> datasets.Dataset:
    """Arrow on disk from one of the readers above, as it reads."""
    kwargs = {"reader": reader, "args": args, "stage": stage, "report": report}
    features = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})
    try:
        return datasets.Dataset.from_generator(_reading, features=features, gen_kwargs=kwargs,
                                               cache_dir=str(cache_dir))
    except ValueError as e:
        if "corresponds to no data" in str(e):  # the files hold no line at all
            return datasets.Dataset.from_dict({"src": [], "tgt": []}, features=features)
        raise
    except Exception as e:  # datasets wraps generator errors; surface ours
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, DataError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise


def _scan_directory(directory: Path) -> dict[str, dict[str, Path]]:
    """{split name as in the files: {lang: path}} for files named {split}.{lang}[.gz]."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        m = _FILE.match(path.name)
        if path.is_file() and m and m["lang"] not in ("tsv", "jsonl", "json", "txt", "md"):
            found.setdefault(m["split"], {})[m["lang"]] = path
    return found


def _check_langs(where: str, available: set[str], src: str, tgt: str) -> None:
    for lang in (src, tgt):
        if lang not in available:
            raise DataError(f"unknown language code '{lang}' for {where}: "
                            f"available {', '.join(sorted(available)) or 'none'}")
    if src == tgt:
        raise DataError(f"{named('src')} and {named('tgt')} are both '{src}'", "src", "tgt")


def load_directory(directory: Path, src: str, tgt: str, cache_dir: Path, report: Report
                   ) -> tuple[datasets.DatasetDict, Source]:
    found = _scan_directory(directory)
    if not found:
        raise DataError(f"{directory}: no files named like train.{src}, val.{src}.gz, test.{tgt} ...")
    _check_langs(str(directory), {lang for langs in found.values() for lang in langs}, src, tgt)
    source = Source("directory", str(directory))
    splits = {}
    for raw_split, langs in sorted(found.items()):
        split = canonical_split(raw_split)
        if split is None or src not in langs or tgt not in langs:
            continue
        if split in splits:  # several test sets: the first in name order is the test split
            continue
        paths = [langs[src], langs[tgt]]
        source.files[split] = paths
        splits[split] = _from_generator(_pairs_from_files, {"src_path": str(paths[0]), "tgt_path": str(paths[1])},
                                        f"reading {split}", report, cache_dir)
    if not splits:
        raise DataError(f"{directory}: no split has both .{src} and .{tgt} files "
                        f"(splits: {', '.join(sorted(found))})")
    return datasets.DatasetDict(splits), source


def load_prefix(prefix: Path, src: str, tgt: str, cache_dir: Path, report: Report
                ) -> tuple[datasets.DatasetDict, Source]:
    def side(lang: str) -> Path:
        for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
            if candidate.is_file():
                return candidate
        raise DataError(f"file not found: {prefix}.{lang} (nor {prefix}.{lang}.gz)")

    paths = [side(src), side(tgt)]
    split = canonical_split(prefix.name) or "train"
    ds = _from_generator(_pairs_from_files, {"src_path": str(paths[0]), "tgt_path": str(paths[1])},
                         f"reading {split}", report, cache_dir)
    return datasets.DatasetDict({split: ds}), Source("parallel files", str(prefix), {split: paths})


def load_table(path: Path, src: str, tgt: str, cache_dir: Path, report: Report
               ) -> tuple[datasets.DatasetDict, Source]:
    name = path.name.lower().removesuffix(".gz")
    gen = _pairs_from_tsv if name.endswith((".tsv", ".tab")) else _pairs_from_jsonl
    split = canonical_split(name.split(".")[0]) or "train"
    ds = _from_generator(gen, {"path": str(path), "src": src, "tgt": tgt}, f"reading {split}", report, cache_dir)
    kind = "tsv" if gen is _pairs_from_tsv else "jsonl"
    return datasets.DatasetDict({split: ds}), Source(kind, str(path), {split: [path]})


def load_demo(src: str, tgt: str, seed: int) -> tuple[datasets.DatasetDict, Source]:
    _check_langs("the demo corpus", {"en", "ko"}, src, tgt)
    splits = {}
    for split, pairs in demo_splits(seed=seed).items():
        columns = {"en": [p[0] for p in pairs], "ko": [p[1] for p in pairs]}
        splits[split] = datasets.Dataset.from_dict({"src": columns[src], "tgt": columns[tgt]})
    return datasets.DatasetDict(splits), Source("demo", f"demo (seed {seed})")


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def pairs_from_hub_layout(dd: datasets.DatasetDict, name: str, src: str, tgt: str) -> datasets.DatasetDict:
    """A `translation` dict column (WMT/IWSLT) or two language columns (bentrevett/multi30k) -> src/tgt."""
    out = {}
    for raw_split, ds in dd.items():
        split = canonical_split(raw_split)
        if split is None or split in out:
            continue
        if "translation" in ds.column_names:
            langs = set(ds.features["translation"].languages) if hasattr(
                ds.features["translation"], "languages") else set(ds[0]["translation"])
            _check_langs(f"dataset {name}", langs, src, tgt)
            out[split] = ds.map(lambda b: {"src": [t[src] for t in b["translation"]],
                                           "tgt": [t[tgt] for t in b["translation"]]},
                                batched=True, remove_columns=ds.column_names)
        else:
            _check_langs(f"dataset {name} (columns)", set(ds.column_names), src, tgt)
            ds = ds.select_columns([src, tgt])
            out[split] = ds.rename_columns({src: "src", tgt: "tgt"}) if src != "tgt" else ds
    if not out:
        raise DataError(f"dataset {name}: no train/validation/test split (splits: {', '.join(dd)})")
    return datasets.DatasetDict(out)


def is_saved_dataset(directory: Path) -> bool:
    """Whether `directory` was written by datasets' save_to_disk (a DatasetDict or one Dataset)."""
    names = datasets.config
    return (directory / names.DATASETDICT_JSON_FILENAME).is_file() or (
        (directory / names.DATASET_STATE_JSON_FILENAME).is_file()
        and (directory / names.DATASET_INFO_FILENAME).is_file())


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def load_saved(directory: Path, src: str, tgt: str, cache_dir: Path) -> tuple[datasets.DatasetDict, Source]:
    """A save_to_disk directory in either hub layout (a translation column or language columns). It is
    loaded from a linked copy in cache_dir: datasets writes the cache files of what follows beside the
    data it maps, and the user's directory must stay as it was."""
    copy = cache_dir / "saved"
    shutil.copytree(directory, copy, copy_function=_link_or_copy)
    try:
        dd = datasets.load_from_disk(str(copy))
    except Exception as e:  # noqa: BLE001 - a damaged save is one line that names it
        raise DataError(f"{directory}: not a readable datasets save_to_disk directory ({str(e)[:100]})") from None
    if not isinstance(dd, datasets.DatasetDict):
        dd = datasets.DatasetDict({"train": dd})
    return pairs_from_hub_layout(dd, str(directory), src, tgt), Source("saved dataset", str(directory))


def load_hub(name: str, config: str | None, src: str, tgt: str, cache_dir: Path
             ) -> tuple[datasets.DatasetDict, Source]:
    if not hub_reachable():
        raise DataError(f"'{name}' is not a local path and the Hugging Face Hub is unreachable "
                        "(offline?): give a local directory or file, or use --dataset demo")
    try:
        dd = datasets.load_dataset(name, config, cache_dir=str(cache_dir))
    except Exception as e:  # noqa: BLE001 - any failure of the hub is one line for the user
        raise DataError(f"could not load '{name}' from the Hugging Face Hub: {e}") from None
    if not isinstance(dd, datasets.DatasetDict):
        dd = datasets.DatasetDict({"train": dd})
    return pairs_from_hub_layout(dd, name, src, tgt), Source("hub", name if not config else f"{name}/{config}")


def local_inputs(dataset: str, src: str, tgt: str) -> list[Path]:
    """The local files or directory that `dataset` names (empty for demo and hub names)."""
    if dataset == "demo":
        return []
    path = Path(dataset).expanduser()
    if path.exists():
        return [path]
    return [p for lang in (src, tgt) for gz in ("", ".gz") if (p := Path(f"{path}.{lang}{gz}")).exists()]


def load_corpus(dataset: str, src: str, tgt: str, cache_dir: Path, config: str | None = None,
                seed: int = 0, report: Report = _no_report) -> tuple[datasets.DatasetDict, Source]:
    """Resolve `dataset` (demo, directory, file, prefix or hub name) into src/tgt text pairs."""
    path = Path(dataset).expanduser()
    if src == tgt:
        raise DataError(f"{named('src')} and {named('tgt')} are both '{src}'", "src", "tgt")
    if dataset == "demo":
        return load_demo(src, tgt, seed)
    if path.is_dir() and is_saved_dataset(path):
        return load_saved(path, src, tgt, cache_dir)
    if path.is_dir():
        return load_directory(path, src, tgt, cache_dir, report)
    if path.is_file():
        if re.search(r"\.(tsv|tab|jsonl|json)(\.gz)?$", path.name, re.I):
            return load_table(path, src, tgt, cache_dir, report)
        raise DataError(f"{path}: unknown file type (expected .tsv, .jsonl, a directory, "
                        f"or a prefix such as corpus for corpus.{src} + corpus.{tgt})")
    if any(Path(f"{path}.{lang}{gz}").is_file() for lang in (src, tgt) for gz in ("", ".gz")):
        return load_prefix(path, src, tgt, cache_dir, report)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", dataset) or dataset.startswith((".", "/", "~")):
        raise DataError(f"{dataset}: no such file, directory or prefix "
                        f"({dataset}.{src} / {dataset}.{tgt}), and not a hub name (owner/name)")
    return load_hub(dataset, config, src, tgt, cache_dir)
