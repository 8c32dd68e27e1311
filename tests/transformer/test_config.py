import dataclasses

import pytest

from transformer import ModelConfig


def test_json_round_trip():
    c = ModelConfig(src_vocab_size=100, tgt_vocab_size=90, d_model=64, n_heads=4, norm="pre")
    assert ModelConfig.from_json(c.to_json()) == c


def test_frozen():
    c = ModelConfig(src_vocab_size=10, tgt_vocab_size=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.d_model = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"d_model": 9, "n_heads": 3}, "even"),
        ({"norm": "middle"}, "norm"),
        ({"dropout": 1.5}, "dropout"),
        ({"n_encoder_layers": 0}, "n_encoder_layers"),
        ({"share_embeddings": True, "tgt_vocab_size": 11}, "share_embeddings"),
        ({"pad_id": 10}, "pad_id"),
    ],
)
def test_invalid_configs_raise_clear_value_error(overrides, words):
    kwargs = {"src_vocab_size": 10, "tgt_vocab_size": 10, "d_model": 16, "n_heads": 4} | overrides
    with pytest.raises(ValueError, match=words):
        ModelConfig(**kwargs)


def test_unknown_keys_rejected():
    with pytest.raises(ValueError, match="unknown ModelConfig keys: colour"):
        ModelConfig.from_dict({"src_vocab_size": 10, "tgt_vocab_size": 10, "colour": "red"})


@pytest.mark.parametrize("overrides, words", [
    ({"n_heads": True}, "n_heads must be an int"),
    ({"d_model": 128.0}, "d_model must be an int"),
    ({"dropout": float("nan")}, "dropout must be a finite number"),
    ({"norm": 1}, "norm must be a str"),
    ({"tie_output": 1}, "tie_output must be a bool"),
    ({"max_len": 1}, "max_len must be >= 16"),
])
def test_types_are_checked(overrides, words):
    with pytest.raises(ValueError, match=words):
        ModelConfig(**{"src_vocab_size": 10, "tgt_vocab_size": 10, "d_model": 32, "n_heads": 4, **overrides})


@pytest.mark.parametrize("overrides", [{}, {"norm": "pre"}, {"tie_output": False},
                                       {"share_embeddings": True, "src_vocab_size": 50}])
def test_parameter_count_matches_the_model(overrides):
    from transformer import Transformer

    c = ModelConfig(**{"src_vocab_size": 40, "tgt_vocab_size": 50, "d_model": 32, "n_heads": 4, "d_ff": 48,
                       "n_encoder_layers": 2, "n_decoder_layers": 3, "max_len": 64, **overrides})
    assert c.parameter_count() == sum(p.numel() for p in Transformer(c).parameters())
