import copy

import torch

from transformer.cache import DecoderCache


def _decoded(model, steps=3, batch=2):
    cache, _ = model.encode(torch.randint(3, 23, (batch, 5)))
    for _ in range(steps):
        model.decode(torch.randint(3, 19, (batch, 1)), cache)
    return cache


@torch.no_grad()  # as beam search runs
def test_a_reorder_is_applied_by_the_next_step_and_cleared_by_the_cache(tiny_model):
    cache = _decoded(tiny_model)
    before = [kv.k.clone() for kv in cache.self_kv]
    rows = torch.tensor([1, 1, 0, 0])  # four prefixes (two per memory row): two continue row 1, two row 0
    cache.reorder(rows)
    assert cache.past_rows is not None and cache.self_kv[0].k.size(0) == 2  # pending, nothing copied yet
    tiny_model.decode(torch.randint(3, 19, (4, 1)), cache)
    assert cache.past_rows is None and cache.length == 4
    for past, kv in zip(before, cache.self_kv):
        assert kv.k.shape[:3] == (4, past.size(1), 4)
        torch.testing.assert_close(kv.k[:, :, :3], past[rows])  # the past in the reordered rows, then the step


@torch.no_grad()
def test_dropping_rows_copies_the_memory_now_and_the_past_with_the_next_step(tiny_model):
    """Greedy search's row drop: reorder(rows, rows) on a pending reorder keeps the rows it names."""
    cache = _decoded(tiny_model)
    past, memory = cache.self_kv[1].v.clone(), cache.memory_kv[1].k.clone()
    cache.reorder(torch.tensor([1, 0]))
    cache.reorder(torch.tensor([0]), torch.tensor([1]))  # row 0 (old row 1) goes on, read by sentence 1
    assert cache.memory_kv[1].k.size(0) == 1 and cache.self_kv[1].v.size(0) == 2  # the past: pending
    torch.testing.assert_close(cache.memory_kv[1].k, memory[1:2])
    tiny_model.decode(torch.randint(3, 19, (1, 1)), cache)
    assert cache.past_rows is None and cache.length == 4
    torch.testing.assert_close(cache.self_kv[1].v[:, :, :3], past[1:2])


def test_a_shallow_copy_stays_as_it_was_when_the_other_decodes(tiny_model):
    """explain times teacher forcing on copy.copy(cache): advance() assigns, it never mutates."""
    cache = _decoded(tiny_model, steps=0)
    copied = copy.copy(cache)
    tiny_model.decode(torch.randint(3, 19, (2, 4)), copied)
    assert copied.length == 4 and len(copied.self_kv) == len(tiny_model.decoder.layers)
    assert cache.length == 0 and cache.self_kv == []


def test_each_layer_sees_its_own_memory_and_past(tiny_model):
    cache = _decoded(tiny_model, steps=2)
    assert isinstance(cache, DecoderCache)
    for i in range(len(tiny_model.decoder.layers)):
        view = cache.layer(i)
        assert view.memory_kv is cache.memory_kv[i] and view.past is cache.self_kv[i]
        assert view.src_mask is cache.src_mask and view.past_rows is None


def test_decoding_reads_a_memory_laid_out_heads_first_and_training_its_views(tiny_model):
    """encode() without gradients (a search) stores each layer's memory keys/values contiguous, so no
    step's matmul copies them; with gradients (teacher forcing, read once) they stay views."""
    src = torch.randint(3, 19, (3, 7))
    with torch.no_grad():
        cache, _ = tiny_model.encode(src)
    assert all(kv.k.is_contiguous() and kv.v.is_contiguous() for kv in cache.memory_kv)
    trained, _ = tiny_model.encode(src)
    assert not any(kv.k.is_contiguous() for kv in trained.memory_kv)
    for a, b in zip(cache.memory_kv, trained.memory_kv):
        torch.testing.assert_close(a.k, b.k.detach())
