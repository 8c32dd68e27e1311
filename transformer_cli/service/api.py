"""What serve's endpoints accept: the request bodies (pydantic, strict, no unknown fields), the limits
a request must keep, and ApiError, the one way a request is refused (a 4xx or 503 with a JSON body
{"error": message, "field": name or null}).

The body is read here, not by the framework, so that each refusal names its cause: over --max-body
(413, before the rest is read), not UTF-8 (400, with the byte), not JSON (400, with line and column),
NaN or Infinity (400), then the fields (422, each named: `text[3]`, `beam_size`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask: serve's --max-sentences, --max-chars, --max-body, --max-beam."""

    max_sentences: int = 64  # sentences in one /v1/translate request
    max_chars: int = 2000  # characters in one sentence (and in an attention request's target)
    max_body: int = 1_000_000  # bytes of a request body
    max_beam: int = 16  # beam_size (and n_best) at most


class ApiError(Exception):
    """A refused request: HTTP status, a message naming the problem, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}

    def body(self) -> dict:
        """The JSON the client gets."""
        return {"error": self.message, "field": self.field}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


EXTRA_SEARCH = ("sampling_topk", "sampling_topp", "temperature", "seed", "no_repeat_ngram_size",
                "repetition_penalty", "replace_unk", "coverage_penalty")


class TranslateRequest(_Strict):
    """POST /v1/translate: one text or a list of texts, and the search options of translate."""

    text: str | list[str]
    beam_size: int | None = None  # None: the server's default (the run's search.json, else 5)
    n_best: int = 1
    length_penalty: float | None = None  # None: the server's default (the run's search.json, else 1.0)
    length_style: Literal["gnmt", "average"] | None = None  # None: the run's search.json, else gnmt
    scores: bool = False  # each translation's score (log P / lp) in the answer
    alignment: bool = False  # each translation's word alignment (Pharaoh src-tgt pairs)
    sampling_topk: int = 1  # sampling and repetition options: translate's flags (SearchOptions)
    sampling_topp: float = 1.0
    temperature: float = 1.0
    seed: int = 0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    replace_unk: bool = False
    coverage_penalty: float = 0.0
    target_prefix: str | list[str] | None = None  # what each translation starts with (one per text)

    def extra_search(self) -> dict:
        """The sampling and repetition fields, as SearchOptions takes them."""
        return {name: getattr(self, name) for name in EXTRA_SEARCH}

    @field_validator("text", "target_prefix", mode="before")
    @classmethod
    def _string_or_strings(cls, value):
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise ValueError("must be a string or a list of strings")

    @property
    def texts(self) -> list[str]:
        """The text or texts as a list."""
        return [self.text] if isinstance(self.text, str) else self.text

    @property
    def prefixes(self) -> list[str] | None:
        """The target prefixes as a list (one per text), or None."""
        return [self.target_prefix] if isinstance(self.target_prefix, str) else self.target_prefix


class AttentionRequest(_Strict):
    """POST /v1/attention: a sentence, and the translation to teacher-force (default: the model's own,
    found with beam_size); which maps to return (default every kind, layer and head, and the mean)."""

    text: str
    target: str | None = None
    beam_size: int = 1
    kind: Literal["encoder", "decoder", "cross", "all"] = "all"
    layer: int | Literal["all"] = "all"  # 1-based
    head: int | Literal["mean", "all"] = "all"  # 1-based; all = every head and the mean


async def read_json(request, max_body: int) -> object:
    """The request body as JSON, refused (ApiError) when it is too large, not UTF-8 or not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise ApiError(413, f"the body has {declared} bytes; this server takes at most {max_body} (max_body)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise ApiError(413, f"the body has more than {max_body} bytes, the most this server takes (max_body)")
    return parse_json(bytes(body))


def parse_json(body: bytes) -> object:
    """A body's bytes as JSON: UTF-8, standard JSON (no NaN), not too deeply nested; else a 400."""
    if not body.strip():
        raise ApiError(400, "the body is empty: send a JSON object such as {\"text\": \"...\"}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the body is not valid UTF-8 (byte {e.start}: {body[e.start:e.start + 1]!r})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"the body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON: nested too deeply") from None


def _no_constant(name: str):
    raise ApiError(400, f"the body is not valid JSON: {name} is not a number JSON allows")


def validated(model: type[BaseModel], data: object):
    """data as `model`, or a 422 naming the first field at fault (all of them in the message)."""
    if not isinstance(data, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = [(field_name(err["loc"]), err["msg"].removeprefix("Value error, ")) for err in e.errors()]
        message = "; ".join(f"{name}: {msg}" if name else msg for name, msg in problems)
        raise ApiError(422, message, problems[0][0] or None) from None


def field_name(loc: tuple) -> str:
    """pydantic's error location as a field name: ('text', 3) -> 'text[3]'; union branches dropped."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif not name:
            name = str(part)
        elif part not in ("str", "list[str]", "int", "literal['all']", "literal['mean','all']"):
            name += f".{part}"
    return name
