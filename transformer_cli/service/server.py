"""`serve` as one library call: bind the address, start uvicorn on the app, load the model on the
worker thread, and on SIGTERM or Ctrl-C stop accepting, finish what is in flight, return.

    serve(ServeOptions("work/run", port=8000), announce=print)   # returns when stopped

The address is bound before anything is loaded, so an address in use is one RunError at once; a model
that fails to load stops the server and is raised as its RunError.
"""

from __future__ import annotations

import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from transformer_cli.errors import RunError, named
from transformer_cli.runtime import check_range
from transformer_cli.search_defaults import options_for
from transformer_cli.service.api import RequestLimits
from transformer_cli.service.app import AppSettings, create_app
from transformer_cli.service.metrics import ServiceMetrics
from transformer_cli.service.worker import BatchLimits, ModelWorker
from transformer_cli.translator import SearchOptions, check_precision, load_ensemble


@dataclass(frozen=True)
class ServeOptions:
    """The serve command's flags."""

    model: Path  # run directory (trained or imported)
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000  # 0 = any free port (the announcement says which)
    device: str = "cpu"  # cpu | cuda | auto
    precision: str = "fp32"  # fp32 | bf16 | int8
    batch: BatchLimits = BatchLimits()  # batch tokens, wait for company, queue bound
    limits: RequestLimits = RequestLimits()  # per request: sentences, characters, body bytes, beam
    max_len_a: float = 1.5  # output length limit a * source length + b, as translate's
    max_len_b: int = 10
    shutdown_timeout: float = 30.0  # seconds to finish in-flight requests after SIGTERM / Ctrl-C
    access_log: bool = False  # uvicorn's line per request on stderr
    extra: dict = field(default_factory=dict)  # more uvicorn.Config settings (tests)
    ensemble: tuple[Path, ...] = ()  # more run directories searched with `model` as one (load_ensemble)

    def __post_init__(self) -> None:
        check_range("port", self.port, 0, 65535)
        check_range("shutdown_timeout", self.shutdown_timeout, 0, 86400)
        check_range("batch_tokens", self.batch.batch_tokens, 1, 10_000_000)
        check_range("max_wait_ms", self.batch.max_wait_ms, 0, 60_000)
        check_range("max_queue", self.batch.max_queue, 1, 10_000_000)
        for name in ("max_sentences", "max_chars", "max_body", "max_beam"):
            check_range(name, getattr(self.limits, name), 1, 1 << 40)
        check_precision(self.precision)
        SearchOptions(min(5, self.limits.max_beam), 1, 1.0, self.max_len_a, self.max_len_b, self.batch.batch_tokens)


def serve(options: ServeOptions, announce: Callable[[str], None] = print,
          between: Callable[[], object] | None = None) -> None:
    """Serve until SIGTERM / Ctrl-C (then drain and return) or until the model fails to load (raised).
    between: what the model worker runs between batches and steps (ModelWorker)."""
    import uvicorn

    runs = [options.model, *options.ensemble]
    for run in runs:
        if not Path(run).is_dir():
            raise RunError(f"{run}: model directory not found")
    name = " + ".join(str(r) for r in runs)
    search = default_search(options, runs)  # before listening: a bad search.json is the only message
    sock = bind(options.host, options.port)
    url = address(sock)
    server: uvicorn.Server | None = None

    def stop(error: RunError) -> None:
        server.should_exit = True

    metrics = ServiceMetrics()
    worker = ModelWorker(lambda: load_ensemble(runs, options.device, options.precision), options.batch,
                         metrics, on_fatal=stop, between=between,
                         on_ready=lambda: announce(f"serving {name} at {url} (explorer {url}/, "
                                                   f"API {url}/docs, metrics {url}/metrics)"))
    settings = AppSettings(options.limits, search, " + ".join(Path(r).name for r in runs), options.shutdown_timeout)
    config = uvicorn.Config(create_app(worker, settings, metrics), log_level="warning",
                            access_log=options.access_log, timeout_graceful_shutdown=options.shutdown_timeout,
                            lifespan="on", **options.extra)
    server = uvicorn.Server(config)
    announce(f"loading {name} ...")
    with signals_end_serving():
        server.run(sockets=[sock])
    sock.close()
    if worker.error is not None:
        raise worker.error


def default_search(options: ServeOptions, runs: list[Path]) -> SearchOptions:
    """What a request searches with where it says nothing: the runs' search.json over translate's
    defaults, the beam no wider than the server's max_beam; the server's length limits and batch size."""
    base = SearchOptions(max_len_a=options.max_len_a, max_len_b=options.max_len_b,
                         batch_tokens=options.batch.batch_tokens)
    search = options_for(runs, base)
    return replace(search, beam_size=min(search.beam_size, options.limits.max_beam))


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening); an address in use is a RunError."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise RunError(f"{named('host')} {host!r}: {e.strerror}", "host") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise RunError(f"cannot listen on {host}:{port}: {(e.strerror or str(e)).lower()}", "port") from None
    return sock


def address(sock: socket.socket) -> str:
    """http://host:port of a bound socket (the port chosen when 0 was asked)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def signals_end_serving():
    """While uvicorn serves, SIGTERM and SIGINT mean "drain and stop" (uvicorn's own handlers), and the
    signal it raises again afterwards is absorbed: a drained server returns normally (exit 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in kept.items():
            signal.signal(s, handler)
