"""ModelConfig: the only thing the model sees (frozen, JSON round-trip)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_types(config) -> None:
    """Every field of a config dataclass has its declared type: `n_heads: true` or `d_model: 128.0`
    from a JSON or TOML file is refused rather than silently used (bool is not an int here, and a
    float must be finite)."""
    for f in dataclasses.fields(config):
        value, allowed = getattr(config, f.name), _TYPES.get(str(f.type))
        if allowed is None:
            continue
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            raise ValueError(f"{f.name} must be {'a' if f.type != 'int' else 'an'} {f.type}, "
                             f"got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value}")


MIN_MAX_LEN = 16
ACTIVATIONS = ("relu", "gelu", "swish")  # transformer.layers.FeedForward knows each


@dataclass(frozen=True)
class ModelConfig:
    src_vocab_size: int  # source vocabulary size (embedding rows)
    tgt_vocab_size: int  # target vocabulary size (embedding rows and output classes)
    d_model: int = 512  # width of every sub-layer output (paper: 512)
    n_heads: int = 8  # attention heads h; d_k = d_v = d_model / h
    d_ff: int = 2048  # inner width of the position-wise feed-forward network
    n_encoder_layers: int = 6  # N for the encoder stack
    n_decoder_layers: int = 6  # N for the decoder stack
    dropout: float = 0.1  # P_drop on sub-layer outputs and on embeddings + positions
    attention_dropout: float = 0.0  # dropout on attention weights (not in the paper; 0 = off)
    max_len: int = 512  # longest sequence the positional table covers
    pad_id: int = 0  # padding token id (never attended to, embedding kept at zero)
    norm: str = "post"  # "post": LayerNorm(x + Sublayer(x)) as the paper; "pre": x + Sublayer(LayerNorm(x))
    tie_output: bool = True  # share the target embedding matrix with the output projection
    share_embeddings: bool = False  # share source and target embeddings (joint vocabulary)
    layer_norm_eps: float = 1e-5  # eps inside LayerNorm's square root
    activation: str = "relu"  # feed-forward non-linearity: relu (paper) | gelu | swish (x * sigmoid(x), OPUS-MT)
    output_bias: bool = False  # a bias on the pre-softmax projection (Marian's final_logits_bias; paper: none)

    def __post_init__(self) -> None:
        check_types(self)
        if self.max_len < MIN_MAX_LEN:
            raise ValueError(f"max_len must be >= {MIN_MAX_LEN} (positions for a sentence and its </s>), "
                             f"got {self.max_len}")
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_encoder_layers", "n_decoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.d_model % 2 != 0:
            raise ValueError(f"d_model ({self.d_model}) must be even for sinusoidal positions")
        for name in ("dropout", "attention_dropout"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"ModelConfig.{name} must be in [0, 1), got {p}")
        if self.norm not in ("post", "pre"):
            raise ValueError(f"ModelConfig.norm must be 'post' or 'pre', got {self.norm!r}")
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(f"pad_id ({self.pad_id}) is outside the vocabularies")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "share_embeddings needs one joint vocabulary, got "
                f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ModelConfig.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")

    @property
    def d_k(self) -> int:
        return self.d_model // self.n_heads

    def parameter_count(self) -> int:
        """Trainable parameters of Transformer(self), counted from the shapes (tied weights once)."""
        d, f = self.d_model, self.d_ff
        attention = 4 * (d * d + d)  # W^Q, W^K, W^V, W^O with biases
        feed_forward = d * f + f + f * d + d
        norm = 2 * d  # gamma, beta
        encoder = self.n_encoder_layers * (attention + feed_forward + 2 * norm)
        decoder = self.n_decoder_layers * (2 * attention + feed_forward + 3 * norm)
        final_norms = 2 * norm if self.norm == "pre" else 0
        embeddings = self.tgt_vocab_size * d + (0 if self.share_embeddings else self.src_vocab_size * d)
        output = (0 if self.tie_output else self.tgt_vocab_size * d) + (self.tgt_vocab_size if self.output_bias else 0)
        return encoder + decoder + final_norms + embeddings + output

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        from transformer.json_text import loads

        return cls.from_dict(loads(text))
