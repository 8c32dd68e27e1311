"""serve's Prometheus metrics (prometheus_client), in a registry of the app's own so that two apps in
one process (tests) never share counters.

    transformer_cli_requests_total{endpoint, status}      requests answered
    transformer_cli_request_seconds{endpoint}             latency histogram
    transformer_cli_sentences_total                       sentences translated (empty ones included)
    transformer_cli_source_tokens_total / _output_tokens_total
    transformer_cli_queue_depth                           sentences waiting for a batch
    transformer_cli_live_sentences                        sentences in the running beam search
    transformer_cli_batch_sentences                       histogram of sentences per decoded batch (a
                                                          continuous beam search: all that passed through it)
    transformer_cli_batch_seconds                         histogram of the time one batch took
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from transformer_cli.service.jobs import Observer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PREFIX = "transformer_cli"


class ServiceMetrics(Observer):
    """The counters of one app; the worker reports batches and queue depth, the app requests."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, p = self.registry, PREFIX
        self.requests = Counter(f"{p}_requests", "Requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram(f"{p}_request_seconds", "Time from request to answer", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.sentences = Counter(f"{p}_sentences", "Sentences translated", registry=r)
        self.source_tokens = Counter(f"{p}_source_tokens", "Source tokens decoded (with </s>)", registry=r)
        self.output_tokens = Counter(f"{p}_output_tokens", "Output tokens produced (with </s>)", registry=r)
        self.depth = Gauge(f"{p}_queue_depth", "Sentences waiting for a batch", registry=r)
        self.live_sentences = Gauge(f"{p}_live_sentences", "Sentences in the running beam search", registry=r)
        self.batch_sentences = Histogram(f"{p}_batch_sentences", "Sentences per decoded batch",
                                         buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram(f"{p}_batch_seconds", "Time one batch took to decode",
                                       buckets=LATENCY_BUCKETS, registry=r)

    def queued(self, depth: int) -> None:
        """The queue depth changed."""
        self.depth.set(depth)

    def live(self, sentences: int) -> None:
        """Sentences in the running beam search."""
        self.live_sentences.set(sentences)

    def batch(self, sentences: int, src_tokens: int, out_tokens: int, seconds: float) -> None:
        """A batch (or a continuous search) was decoded."""
        self.batch_sentences.observe(sentences)
        self.batch_seconds.observe(seconds)
        self.source_tokens.inc(src_tokens)
        self.output_tokens.inc(out_tokens)

    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        """A request was answered with `status` after `seconds`."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        """The exposition format /metrics answers with."""
        return generate_latest(self.registry)
