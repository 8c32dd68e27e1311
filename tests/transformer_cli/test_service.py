"""serve's HTTP API on a real uvicorn: answers equal to translate's, batching across requests, the
queue bound, every refusal a JSON 4xx naming its field, health, metrics, attention maps."""

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from data.demo import demo_pairs
from service_helpers import LiveServer
from transformer_cli import load_run
from transformer_cli.maps import KINDS, document, select
from transformer_cli.service.api import RequestLimits
from transformer_cli.service.app import AppSettings
from transformer_cli.service.worker import BatchLimits
from transformer_cli.stream import output_line
from transformer_cli.translator import SearchOptions

LINES = [en for en, _ in demo_pairs(40, seed=7)][:24] + ["", "   ", "I am a student."]


@pytest.fixture(scope="module")
def translator(model_dir):
    return load_run(model_dir)


@pytest.fixture(scope="module")
def server(translator):
    limits = RequestLimits(max_sentences=32, max_chars=300, max_body=20_000, max_beam=8)
    with LiveServer(lambda: translator, BatchLimits(batch_tokens=400, max_wait_ms=50, max_queue=200),
                    AppSettings(limits, SearchOptions(), "demo")) as s:
        yield s


def translate_jsonl(translator, lines, options):
    """What `translate --format jsonl` writes for these lines (the same library call it makes)."""
    return [json.loads(output_line(translator, t, r, "jsonl")) for t, r in zip(lines, translator.translate(lines, options))]


def test_one_request_of_many_lines_equals_translate(server, translator):
    expected = translate_jsonl(translator, LINES, SearchOptions(beam_size=4, n_best=2))
    r = server.post("/v1/translate", {"text": LINES, "beam_size": 4, "n_best": 2, "scores": True, "alignment": True})
    assert r.status == 200, r.body
    got = r.json()["translations"]
    assert [g["text"] for g in got] == [e["translation"] for e in expected]
    assert [g["alignment"] for g in got] == [e["alignment"] for e in expected]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-4)
    assert [[n["text"] for n in g["nbest"]] for g in got] == [[n["translation"] for n in e["nbest"]] for e in expected]
    assert got[24] == {"text": "", "score": 0.0, "nbest": [], "alignment": ""}  # empty line -> empty translation


@pytest.mark.parametrize("extra", [
    {"beam_size": 1, "sampling_topk": 0, "temperature": 1.3, "seed": 5, "n_best": 3},
    {"beam_size": 3, "no_repeat_ngram_size": 2, "repetition_penalty": 1.4},
    {"beam_size": 3, "n_best": 2, "coverage_penalty": 0.4},
])
def test_sampling_and_repetition_options_equal_translate(server, translator, extra):
    """Sampling is keyed by the sentence, not its batch: one sentence per request (so other batches
    than translate's) still gives translate's samples."""
    options = SearchOptions(**{k: v for k, v in extra.items() if k not in ("beam_size", "n_best")},
                            beam_size=extra["beam_size"], n_best=extra.get("n_best", 1))
    expected = [r.nbest for r in translator.translate(LINES[:8], options)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda t: server.post("/v1/translate", {"text": t, **extra, "scores": True}),
                                LINES[:8]))
    assert [r.status for r in replies] == [200] * 8, replies[0].body
    got = [r.json()["translations"][0] for r in replies]
    assert [g["text"] for g in got] == [e[0][0] if e else "" for e in expected]
    if extra.get("n_best", 1) > 1:
        assert [[n["text"] for n in g["nbest"]] for g in got if g["text"]] == [[t for t, _ in e] for e in expected if e]


@pytest.mark.parametrize("beam", [1, 3])
def test_target_prefix_and_replace_unk_equal_translate(server, translator, beam):
    texts = ["I am a student.", "I saw 北京 today.", "", "We went home."]
    prefixes = ["나는", "京", "", "우리"]  # 京: no target piece has it, so the output starts with <unk>
    options = SearchOptions(beam_size=beam, replace_unk=True)
    expected = [r.text for r in translator.translate(texts, options, prefixes)]
    r = server.post("/v1/translate", {"text": texts, "beam_size": beam, "replace_unk": True, "target_prefix": prefixes})
    assert r.status == 200, r.body
    assert [g["text"] for g in r.json()["translations"]] == expected
    assert expected[0].startswith("나는")
    one = server.post("/v1/translate", {"text": texts[0], "beam_size": beam, "target_prefix": prefixes[0]})
    assert one.json()["translations"][0]["text"] == translator.translate(texts[:1], options, prefixes[:1])[0].text


def test_concurrent_single_sentence_clients_get_translates_answers_in_batches(server, translator):
    expected = [r.text for r in translator.translate(LINES, SearchOptions())]
    before = server.metrics.batch_sentences.collect()[0].samples
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda t: server.post("/v1/translate", {"text": t}), LINES))
    assert [r.status for r in replies] == [200] * len(LINES)
    assert [r.json()["translations"][0]["text"] for r in replies] == expected
    after = server.metrics.batch_sentences.collect()[0].samples
    count = lambda samples: next(s.value for s in samples if s.name.endswith("_count"))  # noqa: E731
    total = lambda samples: next(s.value for s in samples if s.name.endswith("_sum"))  # noqa: E731
    batches, sentences = count(after) - count(before), total(after) - total(before)
    assert sentences == len([t for t in LINES if t.strip()])
    assert batches < sentences  # sentences of different requests shared batches


def test_a_full_queue_answers_503_at_once_and_the_server_recovers(translator):
    with LiveServer(lambda: translator, BatchLimits(max_queue=3)) as s:
        r = s.post("/v1/translate", {"text": ["a b", "c d", "e f", "g h"]})
        assert r.status == 503 and r.headers["retry-after"] == "1"
        assert "queue bound of 3" in r.json()["error"]
        assert s.post("/v1/translate", {"text": ["a b", "c d"]}).status == 200


def test_an_overload_gets_fast_503s_never_a_hang(translator):
    with LiveServer(lambda: translator, BatchLimits(max_queue=4, max_wait_ms=0)) as s:
        with ThreadPoolExecutor(32) as pool:
            replies = list(pool.map(lambda i: s.post("/v1/translate", {"text": ["I am a student."] * 2}, timeout=60),
                                    range(64)))
        statuses = {r.status for r in replies}
        assert statuses <= {200, 503} and 503 in statuses and 200 in statuses
        assert s.get("/health").status == 200
        assert s.post("/v1/translate", {"text": "I am a student."}).status == 200


BAD = [
    (b'{"text": ', 400, None, "not valid JSON"),
    (b'{"text": "\xff\xfe"}', 400, None, "not valid UTF-8"),
    (b"", 400, None, "empty"),
    (b'{"text": "a", "length_penalty": NaN}', 400, None, "NaN"),
    (b"[1, 2]", 422, None, "JSON object"),
    (b'{"text": 5}', 422, "text", "string or a list of strings"),
    (b'{"text": ["a", 5]}', 422, "text", "string or a list of strings"),
    (b'{}', 422, "text", "required"),
    (b'{"text": "a", "beam": 4}', 422, "beam", "Extra inputs"),
    (b'{"text": "a", "beam_size": "4"}', 422, "beam_size", "integer"),
    (b'{"text": "a", "beam_size": 0}', 422, "beam_size", "between 1 and 8"),
    (b'{"text": "a", "beam_size": 9}', 422, "beam_size", "max_beam"),
    (b'{"text": "a", "beam_size": 2, "n_best": 3}', 422, "n_best", "n_best"),
    (b'{"text": "a", "length_penalty": -1}', 422, "length_penalty", "length_penalty"),
    (b'{"text": "a", "length_style": "x"}', 422, "length_style", "gnmt"),
    (b'{"text": "a", "scores": "yes"}', 422, "scores", "boolean"),
    (b'{"text": "a", "coverage_penalty": 20}', 422, "coverage_penalty", "between 0"),
    (b'{"text": "a", "beam_size": 1, "coverage_penalty": 0.2}', 422, "coverage_penalty", "beam search"),
    (json.dumps({"text": ["a"] * 33}).encode(), 422, "text", "max_sentences"),
    (json.dumps({"text": ["a", "b" * 301]}).encode(), 422, "text[1]", "max_chars"),
    (json.dumps({"text": "b" * 301}).encode(), 422, "text", "max_chars"),
    (json.dumps({"text": "x" * 25_000}).encode(), 413, None, "max_body"),
    (json.dumps({"text": ["a", "b"], "target_prefix": ["c"]}).encode(), 422, "target_prefix", "one per text"),
    (json.dumps({"text": "a", "target_prefix": 3}).encode(), 422, "target_prefix", "string or a list"),
    (json.dumps({"text": "a", "target_prefix": "b" * 301}).encode(), 422, "target_prefix", "max_chars"),
]


@pytest.mark.parametrize("body,status,field,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_one_json_error_naming_the_problem(server, body, status, field, words):
    r = server.post("/v1/translate", body)
    assert r.status == status, r.body
    assert r.headers["content-type"] == "application/json"
    error = r.json()
    assert words in error["error"] and error["field"] == field
    assert server.get("/health").status == 200


def test_a_body_over_the_limit_without_a_length_is_refused_while_read(server):
    """Chunked transfer: no Content-Length to check first, so the limit is counted as the body arrives."""
    chunks = (b'{"text": "' + b"x" * 5000 + b'"}' for _ in range(5))  # 25 kB in chunks
    r = server.post("/v1/translate", chunks, headers={"Content-Type": "application/json"})
    assert r.status == 413 and "max_body" in r.json()["error"]


@pytest.mark.parametrize("method,path,status", [("GET", "/nope", 404), ("GET", "/v1/translate", 405),
                                                ("PUT", "/v1/attention", 405)])
def test_unknown_routes_and_methods_are_json_errors(server, method, path, status):
    r = server.request(method, path)
    assert r.status == status and path in r.json()["error"]


def test_attention_equals_inspect_attentions_document(server, translator):
    r = server.post("/v1/attention", {"text": "I am a student.", "beam_size": 2})
    assert r.status == 200, r.body
    got = r.json()
    record = translator.inspect("I am a student.", None, 2)
    c = translator.model.config
    layers = {"encoder": list(range(c.n_encoder_layers)), "decoder": list(range(c.n_decoder_layers)),
              "cross": list(range(c.n_decoder_layers))}
    views = select(record, list(KINDS), layers, list(range(c.n_heads))) + select(record, list(KINDS), layers, "mean")
    expected = json.loads(json.dumps(document(record, views)))
    assert got == expected | {"truncated": False}
    keys = {(m["kind"], m["layer"], m["head"]) for m in got["maps"]}
    assert len(keys) == 3 * c.n_decoder_layers * (c.n_heads + 1)


def test_attention_with_a_target_and_one_map(server, translator):
    r = server.post("/v1/attention", {"text": "I am a student.", "target": "나는 학생이다.", "kind": "decoder",
                                      "layer": 1, "head": 1})
    assert r.status == 200
    doc = r.json()
    assert doc["translation"] == "나는 학생이다."
    [m] = doc["maps"]
    assert (m["kind"], m["layer"], m["head"]) == ("decoder", 1, 1)
    for i, row in enumerate(m["weights"]):  # causal: every future position masked
        assert all(v is None for v in row[i + 1:]) and all(v is not None for v in row[: i + 1])
        assert sum(row[: i + 1]) == pytest.approx(1.0, abs=1e-5)
    assert all(v is None for i, row in enumerate(m["scores"]) for v in row[i + 1:])


@pytest.mark.parametrize("body,field", [({"text": "a", "layer": 5}, "layer"), ({"text": "a", "head": 9}, "head"),
                                        ({"text": ""}, "text"), ({"text": "a", "kind": "self"}, "kind"),
                                        ({"text": "a", "beam_size": 99}, "beam_size"),
                                        ({"text": "a", "target": "t" * 301}, "target")])
def test_bad_attention_requests(server, body, field):
    r = server.post("/v1/attention", body)
    assert r.status == 422 and r.json()["field"] == field, r.body


def test_health_model_metrics_and_docs(server):
    assert server.get("/health").json()["status"] == "ready"
    info = server.get("/v1/model").json()
    assert info["heads"] == 2 and info["max_beam"] == 8 and info["model"] == "demo"
    server.post("/v1/translate", {"text": ["I am a student.", "You are a teacher."]})
    text = server.get("/metrics").body.decode()
    for name in ("transformer_cli_requests_total", "transformer_cli_sentences_total", "transformer_cli_queue_depth",
                 "transformer_cli_batch_sentences_bucket", "transformer_cli_request_seconds_bucket",
                 "transformer_cli_source_tokens_total", "transformer_cli_output_tokens_total"):
        assert name in text
    assert 'endpoint="/v1/translate",status="200"' in text
    assert "/v1/translate" in server.get("/openapi.json").json()["paths"]
    assert server.get("/docs").status == 200
    page = server.get("/")
    assert page.status == 200 and b"/static/explorer.js" in page.body
    assert b"http://" not in page.body and b"https://" not in server.get("/static/explorer.js").body  # no CDN


def test_loading_health_is_503_until_the_model_is_loaded(translator):
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return translator

    s = LiveServer(slow_load)
    s.thread.start()
    try:
        for _ in range(100):  # wait for the listening socket
            try:
                r = s.get("/health", timeout=5)
                break
            except OSError:
                threading.Event().wait(0.05)
        assert r.status == 503 and r.json()["status"] == "loading"
        assert s.post("/v1/translate", {"text": "a"}).status == 503
        release.set()
        assert s.worker.ready.wait(30)
        assert s.get("/health").status == 200
    finally:
        release.set()
        s.__exit__()


def test_a_client_that_leaves_costs_nothing_beyond_its_sentences(translator):
    """A request abandoned while it waits in the queue: its sentences are never decoded, and the
    server goes on answering others."""
    started, release = threading.Event(), threading.Event()
    decoded = []
    search = translator.search

    def slow_search(rows, options, prefixes=None):
        decoded.append(len(rows))
        started.set()
        release.wait(30)
        return search(rows, options, prefixes)

    with LiveServer(lambda: translator, BatchLimits(max_wait_ms=0)) as s:
        translator.search = slow_search
        try:
            blocker = threading.Thread(target=s.post, args=("/v1/translate", {"text": "I am a student.",
                                                                              "beam_size": 1}))
            blocker.start()
            assert started.wait(30)
            body = json.dumps({"text": ["a b c"] * 20, "beam_size": 1}).encode()
            with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1]))) as raw:
                raw.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                for _ in range(100):
                    if s.worker.depth == 20:
                        break
                    threading.Event().wait(0.02)
                assert s.worker.depth == 20
            for _ in range(100):  # the disconnect reaches the app; its futures are cancelled
                if s.metrics.requests.labels("/v1/translate", "499")._value.get() == 1:
                    break
                threading.Event().wait(0.02)
            assert s.metrics.requests.labels("/v1/translate", "499")._value.get() == 1
            release.set()
            blocker.join(30)
            assert s.post("/v1/translate", {"text": "You are a teacher.", "beam_size": 1}).status == 200
            assert decoded == [1, 1]  # the abandoned 20 sentences never reached the model
        finally:
            release.set()
            translator.search = search
