import dataclasses
import json

import datasets
import pytest

from data.errors import DataError
from data.prepare import PrepareOptions, prepare
from data.tokenizer import Tokenizers, decode


@pytest.fixture(scope="module")
def multi30k_de_en(tmp_path_factory):
    from tests_shared import shared_data_dir

    out = tmp_path_factory.mktemp("m30k") / "de-en"
    manifest = prepare(PrepareOptions(str(shared_data_dir() / "multi30k"), "de", "en", vocab_size=6000), out)
    return out, manifest


def test_multi30k_output_layout(multi30k_de_en):
    out, manifest = multi30k_de_en
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "prepare.json", "tokenizer.json"]
    dd = datasets.load_from_disk(str(out / "dataset"))
    assert set(dd) == {"train", "validation", "test"}
    train = dd["train"]
    assert train.cache_files, "memory-mapped from the Arrow files on disk"
    assert {"src_ids", "tgt_ids", "src_len", "tgt_len"} <= set(train.column_names)
    row = train[0]
    assert row["src_len"] == len(row["src_ids"]) and row["tgt_len"] == len(row["tgt_ids"])
    toks = Tokenizers.load(out)
    val = dd["validation"][0]
    assert decode(toks.src, val["src_ids"]) == val["src"]
    assert "src" not in train.column_names, "train keeps ids only"
    on_disk = json.loads((out / "prepare.json").read_text())
    assert on_disk == manifest
    assert on_disk["splits"]["train"]["read"] == 29000
    assert on_disk["splits"]["validation"]["kept"] == dd["validation"].num_rows
    assert len(on_disk["input_fingerprint"]) == 6
    assert {"datasets", "tokenizers", "python"} <= set(on_disk["versions"])


@pytest.mark.slow
def test_en_de_direction(shared_data, tmp_path):
    manifest = prepare(PrepareOptions(str(shared_data / "multi30k"), "en", "de", vocab_size=2000,
                                      joint_vocab=False), tmp_path / "en-de")
    dd = datasets.load_from_disk(str(tmp_path / "en-de" / "dataset"))
    assert dd["validation"][0]["src"].startswith("A group of men")
    assert manifest["tokenizer"]["files"] == ["tokenizer.src.json", "tokenizer.tgt.json"]


def test_korean_single_split_becomes_train_and_validation(shared_data, tmp_path):
    manifest = prepare(PrepareOptions(str(shared_data / "korean-english-jhe"), "ko", "en",
                                      vocab_size=3000, valid_size=50), tmp_path / "ko-en")
    assert manifest["splits"]["validation"]["read"] == 50
    assert manifest["splits"]["train"]["read"] == 670
    assert "train" in manifest["notes"] and "validation" in manifest["notes"]


def test_rerun_is_identical(tmp_path):
    opts = PrepareOptions("demo", "en", "ko", vocab_size=500)
    prepare(opts, tmp_path / "a")
    prepare(opts, tmp_path / "b")
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()
    a = datasets.load_from_disk(str(tmp_path / "a/dataset"))
    b = datasets.load_from_disk(str(tmp_path / "b/dataset"))
    for split in a:
        assert a[split][:] == b[split][:]
    ma, mb = (json.loads((tmp_path / d / "prepare.json").read_text()) for d in "ab")
    assert ma == mb


def test_filters_counted(tmp_path):
    src = ["ein Haus", "", "wort " * 40, "a", "ein Haus", "der Hund", "die Katze"]
    tgt = ["a house", "nothing", "word", "a b c d e f g h", "a house", "the dog", "the cat"]
    (tmp_path / "c.de").write_text("\n".join(src) + "\n")
    (tmp_path / "c.en").write_text("\n".join(tgt) + "\n")
    manifest = prepare(PrepareOptions(str(tmp_path / "c"), "de", "en", vocab_size=100, min_frequency=1,
                                      max_tokens=30, max_ratio=3.0, dedup=True, valid_size=0), tmp_path / "o")
    train = manifest["splits"]["train"]
    assert train["read"] == 7
    assert train["dropped"] == {"empty": 1, "too long": 1, "length ratio": 1, "duplicate": 1}
    assert train["kept"] == 3


def test_refuses_non_empty_output_and_overwrites_atomically(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    opts = PrepareOptions("demo", "en", "ko", vocab_size=300)
    with pytest.raises(DataError, match="not empty .*use overwrite"):
        prepare(opts, out)
    with pytest.raises(DataError, match="not made by 'transformer-cli prepare'"):
        prepare(opts, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    prepare(opts, out)
    first = json.loads((out / "prepare.json").read_text())
    prepare(dataclasses.replace(opts, vocab_size=400), out, overwrite=True)
    second = json.loads((out / "prepare.json").read_text())
    assert (first["options"]["vocab_size"], second["options"]["vocab_size"]) == (300, 400)
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no temporary directory left behind"


def test_leftovers_of_a_killed_prepare_are_removed(tmp_path):
    stale = tmp_path / ".out.partial-999999"
    (stale / "dataset").mkdir(parents=True)
    prepare(PrepareOptions("demo", "en", "ko", vocab_size=300), tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("make, words", [
    (lambda p: ((p / "c.de").write_text(""), (p / "c.en").write_text("")), "corpus is empty"),
    (lambda p: ((p / "c.de").write_text("\n\n"), (p / "c.en").write_text("a\nb\n")),
     "train split is empty after filtering: 2 pairs read, dropped 2 empty"),
    (lambda p: ((p / "c.de").write_text("a\nb\n"), (p / "c.en").write_text("a\n")), "2 lines.*has 1"),
    (lambda p: ((p / "c.de").write_bytes(b"\xc3\x28\n"), (p / "c.en").write_text("a\n")), "line 1 is not valid UTF-8"),
])
def test_errors_leave_nothing_behind(tmp_path, make, words):
    make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=words):
        prepare(PrepareOptions(str(tmp_path / "c"), "de", "en", vocab_size=100, min_frequency=1), out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_vocab_size_too_small(tmp_path):
    with pytest.raises(DataError, match="^vocab_size 3 is too small"):
        prepare(PrepareOptions("demo", "en", "ko", vocab_size=3), tmp_path / "o")


@pytest.mark.slow
def test_num_proc_gives_the_same_result(tmp_path):
    a = prepare(PrepareOptions("demo", "en", "ko", vocab_size=400), tmp_path / "a")
    b = prepare(PrepareOptions("demo", "en", "ko", vocab_size=400, num_proc=2), tmp_path / "b")
    da = datasets.load_from_disk(str(tmp_path / "a/dataset"))
    db = datasets.load_from_disk(str(tmp_path / "b/dataset"))
    assert a["splits"] == b["splits"]
    for split in da:
        assert da[split][:] == db[split][:]


def test_huge_lines_are_dropped_without_tokenizing(tmp_path):
    huge = "x" * 200_000
    (tmp_path / "c.de").write_text("ein Haus\n" + huge + "\nder Hund\n")
    (tmp_path / "c.en").write_text("a house\nhuge\nthe dog\n")
    manifest = prepare(PrepareOptions(str(tmp_path / "c"), "de", "en", vocab_size=60, min_frequency=1,
                                      max_tokens=64, valid_size=0), tmp_path / "o")
    assert manifest["splits"]["train"]["dropped"]["too long"] == 1
    assert manifest["splits"]["train"]["kept"] == 2
    toks = Tokenizers.load(tmp_path / "o")
    assert "x" * 20 not in toks.src.get_vocab(), "the huge line took no part in BPE training"
