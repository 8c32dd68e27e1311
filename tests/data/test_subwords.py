import numpy as np
import pytest

from data.batching import SplitBatches, load_split
from data.errors import DataError
from data.subwords import DropoutSplit, Segmenter, dropout_tokenizer
from data.tokenizer import Tokenizers, decode


@pytest.fixture(scope="module")
def plain(demo_data):
    return SplitBatches(load_split(demo_data, "train"), 400)


@pytest.fixture(scope="module")
def toks(demo_data):
    return Tokenizers.load(demo_data)


def rows(ids, n):
    return [ids.row(i).tolist() for i in range(n)]


def test_dropout_zero_gives_the_prepared_batches_exactly(plain, toks, tmp_path):
    """The round trip (plain ids -> text -> ids) through the files is lossless: with p = 0 every
    epoch is planned and batched exactly as from the prepared split."""
    split = DropoutSplit(Segmenter(plain, toks, 0.0, 399, tmp_path))
    for epoch in (0, 1):
        split.ready(epoch)
        ours, theirs = split.plan(5, epoch), plain.plan(5, epoch)
        assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
        for a, b in zip(split.epoch(5, epoch, start=3), plain.epoch(5, epoch, start=3)):
            assert all((getattr(a, k) == getattr(b, k)).all() for k in ("src", "tgt_in", "tgt_out", "index"))


def test_each_epoch_cuts_the_same_text_its_own_way(plain, toks, tmp_path):
    segmenter = Segmenter(plain, toks, 0.3, 399, tmp_path)
    epochs = []
    for epoch in (0, 1):
        segmenter.ready(epoch)
        epochs.append(segmenter.load(epoch))
    n = plain.size
    for side in (0, 1):
        tok = toks.src if side == 0 else toks.tgt
        plain_rows = rows(plain.src if side == 0 else plain.tgt, n)
        first, second = rows(epochs[0][side], n), rows(epochs[1][side], n)
        assert [decode(tok, r) for r in first] == [decode(tok, r) for r in plain_rows], "the same text"
        assert all(len(a) >= len(b) for a, b in zip(first, plain_rows)), "skipped merges only split more"
        assert sum(a != b for a, b in zip(first, plain_rows)) > n // 4, "p = 0.3 changes most sentences"
        assert first != second, "every epoch draws its own segmentation"


def test_an_epoch_is_written_once_and_read_back_the_same(plain, toks, tmp_path):
    """What a resumed run or another rank reads is what the epoch's batches were made from."""
    split = DropoutSplit(Segmenter(plain, toks, 0.2, 399, tmp_path))
    split.ready(0)
    before = [b.src.clone() for b in split.epoch(1, 0)]
    split.ready(0)  # already there: not drawn again
    again = DropoutSplit(Segmenter(plain, toks, 0.2, 399, tmp_path))
    after = [b.src for b in again.epoch(1, 0)]
    assert len(before) == len(after) and all(torch_equal(a, b) for a, b in zip(before, after))


def torch_equal(a, b):
    return a.shape == b.shape and bool((a == b).all())


def test_rows_stay_within_the_run_limits_and_old_epochs_are_pruned(plain, toks, tmp_path):
    longest = int(max(plain.src.lengths.max(), plain.tgt.lengths.max()))
    segmenter = Segmenter(plain, toks, 0.5, longest, tmp_path)
    for epoch in range(3):
        segmenter.ready(epoch)
    src, tgt = segmenter.load(2)
    assert max(src.lengths.max(), tgt.lengths.max()) <= longest
    segmenter.prune(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-000002"]
    with pytest.raises(DataError, match="segmentation of epoch 0 is missing"):
        segmenter.load(0)


def test_a_tokenizer_that_is_not_bpe_is_refused_by_name():
    from tokenizers import Tokenizer, models

    with pytest.raises(DataError, match="bpe_dropout needs a BPE tokenizer; this run's is Unigram"):
        dropout_tokenizer(Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0)), 0.1)


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_a_probability_out_of_range_is_refused_by_name(plain, toks, tmp_path, p):
    with pytest.raises(DataError, match="bpe_dropout must be in"):
        Segmenter(plain, toks, p, 399, tmp_path)
