"""serve's HTTP API (FastAPI): the routes, each a few lines over the model worker and the library.

    POST /v1/translate   {"text": "..." | ["...", ...], "beam_size": 5, ...} -> {"translations": [...]}
    POST /v1/attention   {"text": "...", "target": null, ...} -> inspect-attention's JSON document
    GET  /v1/model       the model's shape and this server's limits (the explorer reads it)
    GET  /health         200 once the model is loaded, 503 before
    GET  /metrics        Prometheus exposition
    GET  /docs           the OpenAPI page;  GET /  the attention explorer (static files of this package)

Every refusal is a JSON {"error": message, "field": name}: 4xx for the request's fault, 503 (with
Retry-After) when the queue is full or the model not loaded, 499 recorded for a client that left.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from transformer_cli import maps
from transformer_cli.errors import RunError
from transformer_cli.service.api import (ApiError, AttentionRequest, RequestLimits, TranslateRequest, read_json,
                                         validated)
from transformer_cli.service.metrics import ServiceMetrics
from transformer_cli.service.worker import Answer, ModelWorker, NotReady, QueueFull
from transformer_cli.translator import SearchOptions, Translator

STATIC = Path(__file__).parent / "static"
ROUTES = ("/v1/translate", "/v1/attention", "/v1/model", "/health", "/metrics", "/")
CLIENT_GONE = 499  # nginx's "client closed request": recorded, never sent


@dataclass(frozen=True)
class AppSettings:
    """What the routes need besides the worker: limits, defaults of the search, names."""

    limits: RequestLimits = RequestLimits()
    search: SearchOptions = SearchOptions()  # max_len_a/b and batch_tokens for every request; beam_size,
    # length_penalty and length_style for requests without them (serve: the run's search.json)
    model_name: str = "model"
    shutdown_timeout: float = 30.0  # seconds the worker may take to finish its queue on shutdown


def create_app(worker: ModelWorker, settings: AppSettings = AppSettings(),
               metrics: ServiceMetrics | None = None) -> FastAPI:
    """The app; its lifespan starts the worker (which loads the model) and stops it, queue finished."""
    metrics = metrics or ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await asyncio.to_thread(worker.stop, settings.shutdown_timeout)

    app = FastAPI(title="transformer-cli serve", summary=f"Translation and attention maps of {settings.model_name}",
                  lifespan=lifespan)
    _errors_and_metrics(app, metrics)
    _translation_routes(app, worker, settings, metrics)
    _status_routes(app, worker, settings, metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _errors_and_metrics(app: FastAPI, metrics: ServiceMetrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(e.body(), e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):  # unknown route, wrong method
        return JSONResponse({"error": f"{request.method} {request.url.path}: {e.detail}", "field": None},
                            e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):  # a bug: answered as JSON, logged by uvicorn
        return JSONResponse({"error": f"internal error ({type(e).__name__}: {e})", "field": None}, 500)

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        path = request.url.path
        endpoint = path if path in ROUTES else ("/static" if path.startswith("/static/") else "other")
        metrics.answered(endpoint, response.status_code, time.perf_counter() - start)
        return response


def _translation_routes(app: FastAPI, worker: ModelWorker, settings: AppSettings, metrics: ServiceMetrics) -> None:
    limits = settings.limits

    @app.post("/v1/translate", openapi_extra=_body(TranslateRequest))
    async def translate(request: Request):
        """Translate one text or a list (answers in input order; an empty text gives an empty one)."""
        req = validated(TranslateRequest, await read_json(request, limits.max_body))
        texts = check_texts(req.texts, limits)
        prefixes = check_prefixes(req.prefixes, texts, limits)
        options = search_options(req.beam_size, req.n_best, req.length_penalty, req.length_style, settings,
                                 **req.extra_search())
        answers = await _answers(request, _queued(lambda: worker.submit(texts, options, req.alignment, prefixes)))
        if answers is None:
            return Response(status_code=CLIENT_GONE)
        metrics.sentences.inc(len(texts))
        return {"translations": [translation_item(a, req) for a in answers]}

    @app.post("/v1/attention", openapi_extra=_body(AttentionRequest))
    async def attention(request: Request):
        """Every attention map of a sentence (inspect-attention --format json's document)."""
        req = validated(AttentionRequest, await read_json(request, limits.max_body))
        check_texts([req.text] + ([req.target] if req.target is not None else []), limits, ("text", "target"))
        if not req.text.strip():
            raise ApiError(422, "text is empty: give the sentence to look at", "text")
        search_options(req.beam_size, 1, 1.0, "gnmt", settings)
        future = _queued(lambda: worker.call(lambda t: attention_document(t, req)))
        answers = await _answers(request, [future])
        return Response(status_code=CLIENT_GONE) if answers is None else answers[0]


def _status_routes(app: FastAPI, worker: ModelWorker, settings: AppSettings, metrics: ServiceMetrics) -> None:
    @app.get("/health")
    async def health():
        """200 {"status": "ready"} once the model is loaded; 503 while it loads (or if it failed)."""
        if worker.ready.is_set():
            return {"status": "ready", "model": settings.model_name, "load_seconds": round(worker.load_seconds, 3)}
        status = "failed" if worker.error else "loading"
        return JSONResponse({"status": status, "model": settings.model_name}, 503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=metrics.content_type)

    @app.get("/v1/model")
    async def model():
        """The model's layers and heads and this server's limits."""
        t = _ready(worker)
        c = t.model.config
        return {"model": settings.model_name, "encoder_layers": c.n_encoder_layers,
                "decoder_layers": c.n_decoder_layers, "heads": c.n_heads, "d_model": c.d_model,
                "max_source_tokens": t.max_src_tokens, **vars(settings.limits),
                "defaults": {k: getattr(settings.search, k) for k in ("beam_size", "length_penalty", "length_style")}}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def explorer():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


def check_texts(texts: list[str], limits: RequestLimits, names: tuple[str, ...] | None = None) -> list[str]:
    """At most max_sentences texts of at most max_chars characters each (422 naming the one at fault)."""
    if len(texts) > limits.max_sentences:
        raise ApiError(422, f"text has {len(texts)} sentences; this server takes at most {limits.max_sentences} "
                       "per request (max_sentences)", "text")
    for i, t in enumerate(texts):
        if len(t) > limits.max_chars:
            name = names[i] if names else ("text" if len(texts) == 1 and i == 0 else f"text[{i}]")
            raise ApiError(422, f"{name} has {len(t)} characters; this server takes at most {limits.max_chars} "
                           "per sentence (max_chars)", name.split("[")[0] if names else name)
    return texts


def check_prefixes(prefixes: list[str] | None, texts: list[str], limits: RequestLimits) -> list[str] | None:
    """target_prefix: one per text (a string for a string), each within the text limits."""
    if prefixes is None:
        return None
    if len(prefixes) != len(texts):
        raise ApiError(422, f"target_prefix has {len(prefixes)} entries for {len(texts)} texts: give one per text "
                       "(an empty string for none)", "target_prefix")
    return check_texts(prefixes, limits, ("target_prefix",) * len(prefixes))


def search_options(beam_size: int | None, n_best: int, length_penalty: float | None, length_style: str | None,
                   settings: AppSettings, **extra) -> SearchOptions:
    """A request's search options over the server's defaults (settings.search: a field left out or
    null is the server's); out of range is a 422 naming the field. extra: SearchOptions' sampling and
    repetition fields."""
    d = settings.search
    beam_size = d.beam_size if beam_size is None else beam_size
    length_penalty = d.length_penalty if length_penalty is None else length_penalty
    length_style = d.length_style if length_style is None else length_style
    for name, value in (("beam_size", beam_size), ("n_best", n_best)):
        if not 1 <= value <= settings.limits.max_beam:
            raise ApiError(422, f"{name} must be between 1 and {settings.limits.max_beam} (this server's "
                           f"max_beam), got {value}", name)
    try:
        return SearchOptions(beam_size, n_best, length_penalty, d.max_len_a, d.max_len_b, d.batch_tokens,
                             length_style=length_style, **extra)
    except RunError as e:
        raise ApiError(422, str(e), e.params[0] if e.params else None) from None


def translation_item(answer: Answer, req: TranslateRequest) -> dict:
    """One translation as the API answers it: text, and score / nbest / alignment when asked."""
    t = answer.translation
    item: dict = {"text": t.text}
    if req.scores:
        item["score"] = t.score
    if req.n_best > 1:
        item["nbest"] = [{"text": text, "score": score} for text, score in t.nbest]
    if req.alignment:
        item["alignment"] = answer.alignment or ""
    if t.truncated:
        item["truncated"] = True
    return item


def attention_document(translator: Translator, req: AttentionRequest) -> dict:
    """inspect-attention's JSON document for the request (run on the worker thread)."""
    c = translator.model.config
    counts = {"encoder": c.n_encoder_layers, "decoder": c.n_decoder_layers, "cross": c.n_decoder_layers}
    kinds = list(maps.KINDS) if req.kind == "all" else [req.kind]
    if req.layer != "all" and not all(1 <= req.layer <= counts[k] for k in kinds):
        raise ApiError(422, f"layer {req.layer} does not exist: the model has layers 1-"
                       f"{min(counts[k] for k in kinds)}", "layer")
    if isinstance(req.head, int) and not 1 <= req.head <= c.n_heads:
        raise ApiError(422, f"head {req.head} does not exist: the model has heads 1-{c.n_heads}", "head")
    layers = {k: list(range(counts[k])) if req.layer == "all" else [req.layer - 1] for k in kinds}
    record = translator.inspect(req.text, req.target, req.beam_size)
    heads = {"all": [list(range(c.n_heads)), "mean"], "mean": ["mean"]}.get(req.head) or [[req.head - 1]]
    views = [v for h in heads for v in maps.select(record, kinds, layers, h)]
    return maps.document(record, views) | {"truncated": record.truncated}


def _body(model) -> dict:
    """The OpenAPI description of a body the route reads itself (so /docs shows its fields)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _queued(submit):
    """submit() with the worker's refusals as 503s: a full queue (Retry-After), a model not loaded."""
    try:
        return submit()
    except QueueFull as e:
        raise ApiError(503, f"the server is busy: {e}; retry later", None, {"Retry-After": "1"}) from None
    except NotReady as e:
        raise ApiError(503, f"{e}; retry later", None, {"Retry-After": "1"}) from None


def _ready(worker: ModelWorker) -> Translator:
    return _queued(worker.usable)


async def _answers(request: Request, futures: list) -> list | None:
    """The futures' results in order, or None when the client went away first (its queued sentences
    are then cancelled: the worker skips them). An ApiError raised on the worker is passed on."""
    if not futures:
        return []
    waiting = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if waiting not in done:
        waiting.cancel()
        return None
    try:
        return waiting.result()
    except ApiError:
        raise
    except RunError as e:
        raise ApiError(422, str(e), e.params[0] if e.params else None) from None


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
