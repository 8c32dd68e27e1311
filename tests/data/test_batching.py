import numpy as np
import pytest

from data.batching import SplitBatches, load_split
from data.errors import DataError
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@pytest.fixture(scope="module")
def train_split(demo_data):
    return load_split(demo_data, "train")


@pytest.mark.parametrize("max_tokens", [64, 500, 3000])
def test_batches_respect_token_bound_and_cover_each_row_once(train_split, max_tokens):
    sb = SplitBatches(train_split, max_tokens)
    plan = sb.plan(seed=3, epoch=0)
    for rows in plan:
        assert len(rows) * int(sb.widths[rows].max()) <= max_tokens
    seen = np.concatenate(plan)
    assert len(seen) == sb.size and len(np.unique(seen)) == sb.size


def test_order_is_a_function_of_seed_and_epoch(train_split):
    sb = SplitBatches(train_split, 500)
    same = [np.array_equal(a, b) for a, b in zip(sb.plan(1, 0), sb.plan(1, 0))]
    assert all(same)
    assert not all(np.array_equal(a, b) for a, b in zip(sb.plan(1, 0), sb.plan(1, 1)))
    start = list(sb.epoch(1, 0, start=5))
    assert np.array_equal(start[0].index.numpy(), sb.plan(1, 0)[5])


def test_batch_tensors(train_split):
    sb = SplitBatches(train_split, 300)
    b = next(iter(sb.epoch(0, 0)))
    assert b.src.shape[0] == b.tgt_in.shape[0] == b.tgt_out.shape[0]
    assert (b.tgt_in[:, 0] == BOS_ID).all()
    for i, row in enumerate(b.index.tolist()):
        tgt = train_split[row]["tgt_ids"]
        src = train_split[row]["src_ids"]
        assert b.tgt_out[i, : len(tgt) + 1].tolist() == tgt + [EOS_ID]
        assert b.tgt_in[i, 1 : len(tgt) + 1].tolist() == tgt
        assert b.src[i, : len(src) + 1].tolist() == src + [EOS_ID]
        assert (b.src[i, len(src) + 1 :] == PAD_ID).all()
    assert b.n_tokens == int((b.tgt_out != PAD_ID).sum())


def test_max_tokens_smaller_than_longest_pair(train_split):
    with pytest.raises(DataError, match="^max_tokens 5 is smaller than the longest pair"):
        SplitBatches(train_split, 5)


def test_token_ids_are_read_in_place_across_chunks(tmp_path):
    import datasets

    from data.batching import TokenIds

    parts = [datasets.Dataset.from_dict({"src_ids": [[i, i + 1, i + 2][: 1 + i % 3] for i in range(k, k + 5)]})
             for k in (0, 5, 10)]
    datasets.concatenate_datasets(parts).save_to_disk(str(tmp_path / "ds"), num_shards=3)
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    ids = TokenIds(ds, "src_ids")
    assert len(ids.values) >= 2, "several Arrow chunks"
    assert all(not v.flags.owndata for v in ids.values), "views of the memory-mapped file, not copies"
    assert [ids.row(i).tolist() for i in range(15)] == ds["src_ids"]
    assert ids.lengths.tolist() == [len(r) for r in ds["src_ids"]]
