"""`transformer-cli serve`: the translation service and attention explorer over HTTP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import typer

from cli.errors import UserError, fail

O = typer.Option
TRIM_SECONDS = 5.0  # how often serve's model worker hands freed heap memory back (runtime.FreedMemoryReturn)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cli(
        models: List[Path] = O(..., "--model", "-m", help="Run directory (from 'train' or 'import'); repeat it "
                               "for an ensemble (as translate's)."),
        host: str = O("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
        port: int = O(8000, "--port", "-p", help="TCP port (0 = any free port; the start line says which)."),
        batch_tokens: int = O(4000, "--batch-tokens", help="Source tokens per batch, across requests."),
        max_wait_ms: float = O(10.0, "--max-wait-ms", help="How long a sentence waits for others to share its batch."),
        max_queue: int = O(1024, "--max-queue", help="Sentences waiting at most; past it requests get 503."),
        max_sentences: int = O(64, "--max-sentences", help="Sentences per request at most."),
        max_chars: int = O(2000, "--max-chars", help="Characters per sentence at most."),
        max_body: int = O(1_000_000, "--max-body", help="Bytes per request body at most."),
        max_beam: int = O(16, "--max-beam", help="Largest beam_size (and n_best) a request may ask for."),
        max_len_a: float = O(1.5, "--max-len-a", help="Output length limit a * source length + b."),
        max_len_b: int = O(10, "--max-len-b"),
        shutdown_timeout: float = O(30.0, "--shutdown-timeout", help="Seconds to finish in-flight requests on SIGTERM."),
        device: str = O("cpu", "--device", help="cpu | cuda | auto"),
        threads: int = O(0, "--threads", help="Torch threads (0 = default)."),
        precision: str = O("fp32", "--precision", help="fp32 | bf16 | int8 (CPU: int8 linear layers)"),
        access_log: bool = O(False, "--access-log", help="A line per request on stderr."),
    ) -> None:
        """Serve translations (POST /v1/translate), attention maps (POST /v1/attention) and the attention
        explorer (GET /), batching sentences across requests."""
        from transformer_cli.runtime import (SERVE_KERNEL_CACHE, FreedMemoryReturn, bound_kernel_cache,
                                             reuse_freed_memory, set_threads)
        from transformer_cli.service import BatchLimits, RequestLimits, ServeOptions, serve

        try:
            options = ServeOptions(models[0], host, port, device, precision,
                                   BatchLimits(batch_tokens, max_wait_ms, max_queue),
                                   RequestLimits(max_sentences, max_chars, max_body, max_beam),
                                   max_len_a, max_len_b, shutdown_timeout, access_log, ensemble=tuple(models[1:]))
            set_threads(threads)
            reuse_freed_memory()
            bound_kernel_cache(SERVE_KERNEL_CACHE)
            serve(options, announce=lambda line: print(line, file=sys.stderr, flush=True),
                  between=FreedMemoryReturn(TRIM_SECONDS))
        except UserError as e:
            fail(e)
        print("stopped", file=sys.stderr)
