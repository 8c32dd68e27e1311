"""Random sampling of the next token: temperature, top-k and top-p (nucleus), reproducible for a seed
and batch-invariant.

A draw is the Gumbel-max trick (argmax of log p / T + Gumbel noise is a sample of softmax(log p / T)),
the noise coming from a counter-based generator (SplitMix64 over int64 tensors): noise(key, step,
token), where a row's key mixes the seed, the sentence's source ids and the sample number. So a
sentence draws the same tokens whatever batch it is in, in any order, on any device, and the same
seed gives the same output (the standard way to make back-translations: Edunov et al., 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transformer.errors import ParamError, named

def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 torch stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic): a bijection that scrambles bits."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def uniform(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """(rows, vocab) float64 in (0, 1), a function of (key, step, token) only."""
    row = mix(keys ^ mix(torch.full_like(keys, step)))  # (rows,)
    z = mix(row[:, None] ^ torch.arange(vocab, device=keys.device, dtype=torch.int64))  # (rows, vocab)
    return (_shr(z, 11).double() + 0.5) * 2.0 ** -53


@dataclass(frozen=True)
class Sampling:
    """How to draw each token: from the top_k most probable (0 = all), within the smallest set
    whose probability reaches top_p, after dividing the log-probabilities by temperature."""

    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.top_k <= 1_000_000:
            raise ParamError(f"{named('sampling_topk')} must be 0 (the whole vocabulary) or a count, got "
                             f"{self.top_k}", "sampling_topk")
        if not 0 < self.top_p <= 1:
            raise ParamError(f"{named('sampling_topp')} must be above 0 and at most 1, got {self.top_p}",
                             "sampling_topp")
        if not 0 < self.temperature <= 100:
            raise ParamError(f"{named('temperature')} must be above 0 and at most 100, got {self.temperature}",
                             "temperature")
        if not 0 <= self.seed < 1 << 63:
            raise ParamError(f"{named('seed')} must be between 0 and 2^63 - 1, got {self.seed}", "seed")

    def keys(self, src: torch.Tensor, pad_id: int, sample: torch.Tensor) -> torch.Tensor:
        """(rows,) int64 key of each row: the seed, the row's source ids (src (rows, len), pad_id
        ignored) and its sample number (rows,)."""
        key = mix(torch.full((src.size(0),), self.seed, dtype=torch.int64, device=src.device))
        for column in src.unbind(1):
            key = torch.where(column != pad_id, mix(key ^ column), key)
        return mix(key ^ mix(sample.to(torch.int64)))

    def draw(self, logp: torch.Tensor, keys: torch.Tensor, step: int) -> torch.Tensor:
        """One token per row (rows,) from logp (rows, vocab), the model's log-probabilities (-inf for
        tokens never allowed)."""
        scores = logp / self.temperature
        if self.top_k and self.top_k < scores.size(1):
            kth = scores.topk(self.top_k, dim=1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            scores = _nucleus(scores, self.top_p)
        gumbel = -torch.log(-torch.log(uniform(keys, step, scores.size(1))))
        return (scores.double() + gumbel).argmax(dim=1)


def _nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """-inf outside the smallest set of most probable tokens whose probability reaches top_p
    (softmax of scores; the most probable token is always kept), as transformers' TopPLogitsWarper."""
    ordered, order = scores.sort(dim=1, descending=True)
    probs = ordered.softmax(dim=1)
    before = probs.cumsum(dim=1) - probs  # mass of the tokens ahead
    drop = before >= top_p
    drop[:, 0] = False
    return scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
