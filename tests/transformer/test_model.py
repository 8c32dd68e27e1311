import dataclasses

import pytest
import torch

from transformer import ModelConfig, Transformer
from transformer.decoding import greedy_search

PAD = 0


def random_ids(batch, length, vocab):
    return torch.randint(1, vocab, (batch, length))


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_decoder_is_causal(tiny_config, norm):
    model = Transformer(dataclasses.replace(tiny_config, norm=norm)).eval()
    src, tgt = random_ids(2, 6, 23), random_ids(2, 8, 19)
    logits, _ = model(src, tgt)
    for t in range(8):
        changed = tgt.clone()
        changed[:, t + 1 :] = random_ids(2, 8, 19)[:, t + 1 :]
        logits2, _ = model(src, changed)
        torch.testing.assert_close(logits2[:, : t + 1], logits[:, : t + 1], atol=1e-5, rtol=1e-5)
    # and the future does matter when it is allowed to: position t sees token t
    changed = tgt.clone()
    changed[:, 3] = (tgt[:, 3] % 18) + 1
    assert not torch.allclose(model(src, changed)[0][:, 3], logits[:, 3])


def test_padding_does_not_change_outputs(tiny_model):
    src, tgt = random_ids(1, 5, 23), random_ids(1, 4, 19)
    alone, _ = tiny_model(src, tgt)
    # batched with longer sentences: right-padded source and target
    other_src, other_tgt = random_ids(2, 9, 23), random_ids(2, 7, 19)
    src_b = torch.full((3, 9), PAD)
    tgt_b = torch.full((3, 7), PAD)
    src_b[0, :5], tgt_b[0, :4] = src[0], tgt[0]
    src_b[1:], tgt_b[1:] = other_src, other_tgt
    batched, maps = tiny_model(src_b, tgt_b, return_attention=True)
    torch.testing.assert_close(batched[0, :4], alone[0], atol=1e-5, rtol=1e-5)
    # padded source keys get exactly zero weight
    for record in maps.encoder + maps.cross:
        assert torch.all(record.weights[0, ..., 5:] == 0)


@pytest.mark.parametrize("change", [{}, {"norm": "pre"}, {"share_embeddings": True, "src_vocab_size": 19}])
def test_incremental_decoding_equals_full_forward(tiny_config, change):
    tiny_model = Transformer(dataclasses.replace(tiny_config, **change)).eval()
    src = random_ids(3, 7, 19)
    src[1, 5:] = PAD
    tgt = random_ids(3, 6, 19)
    full, _ = tiny_model(src, tgt)
    cache, _ = tiny_model.encode(src)
    steps = []
    for t in range(6):
        logits, _, _ = tiny_model.decode(tgt[:, t : t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_attention_maps_shapes_and_rows(tiny_model, tiny_config):
    src, tgt = random_ids(2, 7, 23), random_ids(2, 5, 19)
    _, maps = tiny_model(src, tgt, return_attention=True)
    heads = tiny_config.n_heads
    assert len(maps.encoder) == tiny_config.n_encoder_layers
    assert len(maps.decoder) == len(maps.cross) == tiny_config.n_decoder_layers
    for rec in maps.encoder:
        assert rec.weights.shape == (2, heads, 7, 7)
    for rec in maps.decoder:
        assert rec.weights.shape == (2, heads, 5, 5)
        assert torch.all(rec.weights.triu(diagonal=1) == 0)
    for rec in maps.cross:
        assert rec.weights.shape == (2, heads, 5, 7)
    for rec in maps.encoder + maps.decoder + maps.cross:
        torch.testing.assert_close(rec.weights.sum(-1), torch.ones(rec.weights.shape[:-1]))


def test_fused_path_equals_explicit_path(tiny_model):
    src = random_ids(3, 7, 23)
    src[0, 4:] = PAD
    tgt = random_ids(3, 6, 19)
    fused, none = tiny_model(src, tgt)
    explicit, maps = tiny_model(src, tgt, return_attention=True)
    assert none is None and maps is not None
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_every_decoder_layer_attends_to_final_encoder_output(tiny_model):
    src = random_ids(2, 5, 23)
    cache, _ = tiny_model.encode(src)
    x = tiny_model.positions(tiny_model.src_embed(src))
    memory, _ = tiny_model.encoder(x, cache.src_mask)
    for layer, kv in zip(tiny_model.decoder.layers, cache.memory_kv):
        expected = layer.cross_attn.project_kv(memory)
        torch.testing.assert_close(kv.k, expected.k)
        torch.testing.assert_close(kv.v, expected.v)


def test_weight_tying():
    c = ModelConfig(src_vocab_size=30, tgt_vocab_size=30, d_model=16, n_heads=2, d_ff=32,
                    n_encoder_layers=1, n_decoder_layers=1, share_embeddings=True, tie_output=True)
    m = Transformer(c)
    assert m.generator.weight is m.tgt_embed.weight is m.src_embed.weight
    untied = Transformer(dataclasses.replace(c, share_embeddings=False, tie_output=False))
    assert untied.generator.weight is not untied.tgt_embed.weight
    assert untied.src_embed.weight is not untied.tgt_embed.weight
    n_tied = sum(p.numel() for p in m.parameters())
    n_untied = sum(p.numel() for p in untied.parameters())
    assert n_untied - n_tied == 2 * 30 * 16


def test_greedy_batch_invariance(tiny_model):
    src = random_ids(4, 8, 23)
    src[1, 3:] = PAD
    src[3, 6:] = PAD
    batched = greedy_search(tiny_model, src, bos_id=2, eos_id=3)
    for i in range(4):
        length = int((src[i] != PAD).sum())
        alone = greedy_search(tiny_model, src[i : i + 1, :length], bos_id=2, eos_id=3)[0]
        assert alone.tokens == batched[i].tokens
        assert alone.score == pytest.approx(batched[i].score, abs=1e-4)


def test_positions_beyond_max_len_raise(tiny_model):
    with pytest.raises(ValueError, match="max_len"):
        tiny_model(random_ids(1, 65, 23), random_ids(1, 3, 19))


ATTENTION = [f"{proj}.{p}" for proj in ("q_proj", "k_proj", "v_proj", "out_proj") for p in ("weight", "bias")]
FEED_FORWARD = ["w_1.weight", "w_1.bias", "w_2.weight", "w_2.bias"]


def documented_names(c: ModelConfig) -> list[str]:
    """The parameter names checkpoints hold and the exporters (transformer_cli/exporters) map, in order."""
    def norms(prefix, residuals):
        return [f"{prefix}{r}.norm.{p}" for r in residuals for p in ("gamma", "beta")]
    final = [f"final_norm.{p}" for p in ("gamma", "beta")] if c.norm == "pre" else []
    names = ["src_embed.weight", "tgt_embed.weight"]
    for i in range(c.n_encoder_layers):
        p = f"encoder.layers.{i}."
        names += [p + "self_attn." + n for n in ATTENTION] + [p + "feed_forward." + n for n in FEED_FORWARD]
        names += norms(p, ("attn_residual", "ff_residual"))
    names += ["encoder." + n for n in final]
    for i in range(c.n_decoder_layers):
        p = f"decoder.layers.{i}."
        names += [p + a + "." + n for a in ("self_attn", "cross_attn") for n in ATTENTION]
        names += [p + "feed_forward." + n for n in FEED_FORWARD]
        names += norms(p, ("self_residual", "cross_residual", "ff_residual"))
    return names + ["decoder." + n for n in final] + ["generator.weight"]


@pytest.mark.parametrize("changes", [{}, {"norm": "pre"}, {"tie_output": False},
                                     {"share_embeddings": True, "tgt_vocab_size": 23}])
def test_state_dict_names_are_the_documented_ones(tiny_config, changes):
    """Checkpoints written by any earlier version load: the names (and their order) never change."""
    c = dataclasses.replace(tiny_config, n_encoder_layers=2, n_decoder_layers=3, **changes)
    assert list(Transformer(c).state_dict()) == documented_names(c)
