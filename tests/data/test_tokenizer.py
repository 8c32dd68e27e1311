import gzip
import unicodedata
from itertools import islice

import pytest

from data.errors import DataError
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizers, decode, encode_batch, train_bpe


def lines(path, n):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in islice(f, n)]


@pytest.mark.parametrize("path, vocab", [
    ("multi30k/train.en.gz", 4000), ("multi30k/train.de.gz", 4000), ("korean-english-jhe/dev.ko", 4000),
])
def test_round_trip_on_real_text(shared_data, path, vocab):
    texts = lines(shared_data / path, 3000)
    tok = train_bpe(texts, vocab, min_frequency=1)
    ids = encode_batch(tok, texts)
    checked = 0
    for text, row in zip(texts, ids):
        if UNK_ID in row:
            continue
        assert decode(tok, row) == unicodedata.normalize("NFKC", text)
        checked += 1
    assert checked >= 0.95 * len(texts)


def test_specials_have_stable_ids_and_nfkc():
    tok = train_bpe(["ｆｕｌｌ width", "hello world"] * 5, 100, 1)
    assert [tok.token_to_id(t) for t in ("<pad>", "<unk>", "<s>", "</s>")] == [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
    assert decode(tok, encode_batch(tok, ["ｆｕｌｌ"])[0]) == "full"


def test_word_marker_and_punctuation_pieces():
    tok = train_bpe(["I am a student."] * 20, 60, 1)
    assert tok.encode("I am a student.").tokens == ["▁I", "▁am", "▁a", "▁student", "."]


def test_vocab_too_small():
    with pytest.raises(DataError, match="too small"):
        train_bpe(["a b c"], 4)


def test_save_load_joint_and_separate(tmp_path):
    a = train_bpe(["guten tag"] * 3, 50, 1)
    b = train_bpe(["good day"] * 3, 50, 1)
    joint, separate = Tokenizers(a, a), Tokenizers(a, b)
    (tmp_path / "j").mkdir()
    (tmp_path / "s").mkdir()
    assert joint.save(tmp_path / "j") == ["tokenizer.json"]
    assert separate.save(tmp_path / "s") == ["tokenizer.src.json", "tokenizer.tgt.json"]
    assert Tokenizers.load(tmp_path / "j").joint
    loaded = Tokenizers.load(tmp_path / "s")
    assert not loaded.joint and loaded.fingerprint() == separate.fingerprint() != joint.fingerprint()


def test_load_rejects_garbage(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizer file"):
        Tokenizers.load(tmp_path)
    with pytest.raises(DataError, match="no tokenizer.json"):
        Tokenizers.load(tmp_path / "..")


def test_special_token_strings_in_text_are_text(tmp_path):
    tok = train_bpe(["a house <s> </s> <pad> <unk>", "the dog"] * 20, 80, 1)
    Tokenizers(tok, tok).save(tmp_path)
    for t in (tok, Tokenizers.load(tmp_path).src):
        ids = encode_batch(t, ["a <pad> house </s> <s> <unk>"])[0]
        assert not {PAD_ID, BOS_ID, EOS_ID} & set(ids), ids
        assert decode(t, ids) == "a <pad> house </s> <s> <unk>"
