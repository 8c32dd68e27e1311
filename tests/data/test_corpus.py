import gzip
import json

import datasets
import pytest

from data.corpus import canonical_split, load_corpus, pairs_from_hub_layout
from data.errors import DataError


def write(path, lines, gz=False, raw=None):
    data = raw if raw is not None else ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_split_names():
    assert canonical_split("train") == "train"
    assert canonical_split("val") == canonical_split("dev") == canonical_split("valid") == "validation"
    assert canonical_split("test_2016_flickr") == "test"
    assert canonical_split("README") is None


def test_multi30k_directory_both_directions(shared_data, tmp_path):
    dd, source = load_corpus(str(shared_data / "multi30k"), "de", "en", tmp_path / "c1")
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 29000, "validation": 1014, "test": 1000}
    assert source.files["test"][0].name == "test_2016_flickr.de.gz"
    rev, _ = load_corpus(str(shared_data / "multi30k"), "en", "de", tmp_path / "c2")
    assert rev["train"][0] == {"src": dd["train"][0]["tgt"], "tgt": dd["train"][0]["src"]}


def test_korean_prefix_and_directory(shared_data, tmp_path):
    dd, _ = load_corpus(str(shared_data / "korean-english-jhe" / "dev"), "en", "ko", tmp_path / "c")
    assert list(dd) == ["validation"] and dd["validation"].num_rows == 720
    dd2, _ = load_corpus(str(shared_data / "korean-english-jhe"), "ko", "en", tmp_path / "c2")
    assert dd2["validation"][5]["src"] == dd["validation"][5]["tgt"]


@pytest.mark.parametrize("gz", [False, True])
def test_prefix_plain_and_gzipped(tmp_path, gz):
    suffix = ".gz" if gz else ""
    write(tmp_path / f"corpus.de{suffix}", ["Hallo Welt", "Guten Tag"], gz)
    write(tmp_path / f"corpus.en{suffix}", ["Hello world", "Good day"], gz)
    dd, _ = load_corpus(str(tmp_path / "corpus"), "de", "en", tmp_path / "cache")
    assert dd["train"][:] == {"src": ["Hallo Welt", "Guten Tag"], "tgt": ["Hello world", "Good day"]}


def test_tsv_with_and_without_header(tmp_path):
    write(tmp_path / "a.tsv", ["en\tde", "Hello\tHallo", "Day\tTag"])
    dd, _ = load_corpus(str(tmp_path / "a.tsv"), "de", "en", tmp_path / "c1")
    assert dd["train"][:] == {"src": ["Hallo", "Tag"], "tgt": ["Hello", "Day"]}
    write(tmp_path / "b.tsv.gz", ["Hallo\tHello", "Tag\tDay"], gz=True)
    dd, _ = load_corpus(str(tmp_path / "b.tsv.gz"), "de", "en", tmp_path / "c2")
    assert dd["train"][:] == {"src": ["Hallo", "Tag"], "tgt": ["Hello", "Day"]}


def test_jsonl_flat_and_translation_layouts(tmp_path):
    write(tmp_path / "a.jsonl", [json.dumps({"de": "Hallo", "en": "Hello"}),
                                 json.dumps({"translation": {"de": "Tag", "en": "Day"}})])
    dd, _ = load_corpus(str(tmp_path / "a.jsonl"), "en", "de", tmp_path / "c")
    assert dd["train"][:] == {"src": ["Hello", "Day"], "tgt": ["Hallo", "Tag"]}


def test_hub_layouts_mapped():
    wmt = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"translation": [{"de": "Hallo", "en": "Hello"}]}), "validation": datasets.Dataset.from_dict(
        {"translation": [{"de": "Tag", "en": "Day"}]})})
    out = pairs_from_hub_layout(wmt, "wmt", "de", "en")
    assert out["train"][0] == {"src": "Hallo", "tgt": "Hello"} and out["validation"].num_rows == 1
    cols = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"en": ["Hello"], "de": ["Hallo"]})})
    assert pairs_from_hub_layout(cols, "m30k", "en", "de")["train"][0] == {"src": "Hello", "tgt": "Hallo"}
    with pytest.raises(DataError, match="unknown language code 'fr'"):
        pairs_from_hub_layout(cols, "m30k", "fr", "de")


@pytest.mark.parametrize("setup, words", [
    (lambda p: write(p / "c.de", ["a", "b", "c"]) and write(p / "c.en", ["a", "b"]),
     r"c.de has 3 lines, .*c.en has 2"),
    (lambda p: write(p / "c.de", [], raw=b"ok\n\xff\xfebad\n") and write(p / "c.en", ["a", "b"]),
     r"c.de: line 2 is not valid UTF-8"),
    (lambda p: write(p / "c.de", ["a"]), r"file not found: .*c.en"),
    (lambda p: (p / "c.de.gz").write_bytes(b"\x1f\x8bnot gzip") and write(p / "c.en", ["a"]),
     r"c.de.gz: corrupt gzip"),
])
def test_bad_parallel_files(tmp_path, setup, words):
    setup(tmp_path)
    with pytest.raises(DataError, match=words):
        load_corpus(str(tmp_path / "c"), "de", "en", tmp_path / "cache")


def test_unknown_language_and_missing_path(shared_data, tmp_path):
    with pytest.raises(DataError, match="unknown language code 'ja'.*available cs, de, en, fr"):
        load_corpus(str(shared_data / "multi30k"), "ja", "en", tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load_corpus(str(tmp_path / "nothing"), "de", "en", tmp_path)


def test_bad_tsv_and_jsonl_lines(tmp_path):
    write(tmp_path / "a.tsv", ["Hallo\tHello", "only one field"])
    with pytest.raises(DataError, match="a.tsv: line 2 has 1 tab-separated field"):
        load_corpus(str(tmp_path / "a.tsv"), "de", "en", tmp_path / "c1")
    write(tmp_path / "a.jsonl", ['{"de": "x", "en": "y"}', "{broken"])
    with pytest.raises(DataError, match="a.jsonl: line 2 is not valid JSON"):
        load_corpus(str(tmp_path / "a.jsonl"), "de", "en", tmp_path / "c2")


def test_hub_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Hub is unreachable.*--dataset demo"):
        load_corpus("bentrevett/multi30k", "de", "en", tmp_path)


def test_reading_reports_progress(shared_data, tmp_path):
    from data.corpus import load_corpus

    calls = []
    load_corpus(str(shared_data / "multi30k"), "de", "en", tmp_path / "cache",
                report=lambda stage, done, total: calls.append((stage, done, total)))
    train = [(done, total) for stage, done, total in calls if "train" in stage]
    assert train == [(10_000, None), (20_000, None), (29_000, 29_000)], calls
