"""What the model worker queues and reports: its limits, its jobs (a sentence to search, a call to
run), an answer, its refusals, and the Observer that hears about batches (serve's metrics)."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from transformer_cli.errors import RunError
from transformer_cli.translator import SearchOptions, Translation, Translator


class QueueFull(RunError):
    """More sentences are waiting than the queue holds (max_queue); the caller should retry later."""


class NotReady(RunError):
    """The model is still loading (or failed to load, or the worker stopped)."""


@dataclass(frozen=True)
class BatchLimits:
    """How the worker groups sentences: the serve command's --batch-tokens, --max-wait-ms, --max-queue."""

    batch_tokens: int = 4000  # source tokens per batch (padded), as translate's --batch-tokens
    max_wait_ms: float = 10.0  # how long the first sentence of a greedy batch waits for others to join it
    max_queue: int = 1024  # sentences waiting at most; past it submit() raises QueueFull


@dataclass(frozen=True)
class Answer:
    """One sentence's result: its translation, and the word alignment when it was asked for."""

    translation: Translation
    alignment: str | None = None


@dataclass
class Sentence:
    """One queued sentence: its source ids, how to search, and where its answer goes."""

    ids: list[int]
    truncated: bool
    options: SearchOptions
    alignment: bool
    future: Future
    queued_at: float = field(default_factory=time.monotonic)
    prefix: list[int] = field(default_factory=list)  # the output's forced first ids (a target prefix)
    source: str = ""  # the text, for replace_unk

    @property
    def replacing(self) -> str | None:
        """The source text when its <unk>s are to be replaced (Translator.result), else None."""
        return self.source if self.options.replace_unk else None

    @property
    def tokens(self) -> int:
        """Source tokens with </s>: what counts against batch_tokens."""
        return len(self.ids) + 1


@dataclass
class Call:
    """A function of the translator (an attention map, say) run on the worker thread in its turn."""

    fn: Callable[[Translator], object]
    future: Future
    queued_at: float = field(default_factory=time.monotonic)


class Observer:
    """What the worker reports as it goes (serve's Prometheus metrics); by default nothing."""

    def queued(self, depth: int) -> None:
        """`depth` sentences now wait for a batch."""

    def batch(self, sentences: int, src_tokens: int, out_tokens: int, seconds: float) -> None:
        """A batch (or a continuous beam search, all it decoded) took `seconds`."""

    def live(self, sentences: int) -> None:
        """`sentences` are in the running beam search."""
