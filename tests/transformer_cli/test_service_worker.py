"""The model worker alone, on a stand-in translator that records its batches: order kept, batches
token-bounded and of one search option each, a beam search that sentences join while it runs, the
queue bound, cancelled sentences skipped, stop() finishing the queue, a failed load reported."""

import threading
import time

import pytest

from transformer.decoding import Hypothesis
from transformer_cli.errors import RunError
from transformer_cli.service.worker import BatchLimits, ModelWorker, NotReady, QueueFull
from transformer_cli.translator import Encoded, SearchOptions, Translation


GREEDY = SearchOptions(beam_size=1)  # decoded batch by batch (Recorder.search)
BEAM = SearchOptions(beam_size=4)  # a continuous beam search (FakeSession)


class Recorder:
    """Encodes a text as one id per word; 'translates' by reversing the ids; records every batch."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[tuple[list[list[int]], SearchOptions]] = []
        self.delay, self.gate = delay, threading.Event()
        self.sessions: list[list[tuple[int, list[int]]]] = []  # per beam session: (step, lengths admitted)
        self.gate.set()

    def encode(self, texts):
        return Encoded([[len(w) for w in t.split()] for t in texts], [False] * len(texts))

    def search(self, rows, options, prefixes=None):
        self.gate.wait(30)
        time.sleep(self.delay)
        self.batches.append((rows, options))
        return [[Hypothesis(list(reversed(r)), [0.0] * len(r), -float(len(r)))] for r in rows]

    def result(self, nbest, src_ids=(), truncated=False, source=None):
        return Translation(" ".join(map(str, nbest[0].tokens)), nbest[0].score, ids=nbest[0].tokens)

    def alignment(self, translation):
        return "0-0"

    def tensor(self, rows):
        return rows

    def prefix(self, rows):
        return None

    def beam_session(self, options):
        return FakeSession(self, options)


class FakeSession:
    """A continuous search in which a sentence of n ids ends after n steps; records who joined when."""

    def __init__(self, recorder, options) -> None:
        self.recorder, self.options, self.left, self.steps = recorder, options, {}, 0
        recorder.sessions.append([])

    @property
    def live(self):
        return len(self.left)

    def admit(self, rows, keys, prefix=None):
        self.recorder.sessions[-1].append((self.steps, [len(r) for r in rows]))
        self.left.update((k, (r, len(r))) for k, r in zip(keys, rows))

    def step(self):
        self.recorder.gate.wait(30)
        time.sleep(self.recorder.delay)
        self.steps += 1
        self.left = {k: (r, n - 1) for k, (r, n) in self.left.items()}
        ended = [(k, [Hypothesis(list(reversed(r)), [0.0] * len(r), -float(len(r)))])
                 for k, (r, n) in self.left.items() if n <= 0]
        for k, _ in ended:
            del self.left[k]
        return ended


def started(recorder, limits=BatchLimits(), **kw) -> ModelWorker:
    worker = ModelWorker(lambda: recorder, limits, **kw)
    worker.start()
    assert worker.ready.wait(10)
    return worker


def test_answers_come_back_in_order_and_empty_texts_at_once():
    worker = started(Recorder())
    futures = worker.submit(["a bb ccc", "", "dddd", "  "], GREEDY)
    assert futures[1].done() and futures[3].done()
    assert [f.result(10).translation.text for f in futures] == ["3 2 1", "", "4", ""]
    worker.stop(10)


def test_sentences_of_many_requests_share_token_bounded_batches_of_one_option():
    recorder = Recorder()
    recorder.gate.clear()  # hold the worker so everything queues
    worker = started(recorder, BatchLimits(batch_tokens=12, max_wait_ms=0))
    beam5, beam2 = GREEDY, SearchOptions(beam_size=1, length_penalty=0.5)
    first = worker.submit(["a"], beam5)  # taken at once, waits at the gate
    time.sleep(0.1)
    requests = [worker.submit(["a b c"], beam5 if i % 2 == 0 else beam2) for i in range(8)]
    recorder.gate.set()
    for f in first + [f for r in requests for f in r]:
        f.result(10)
    worker.stop(10)
    batches = recorder.batches[1:]
    assert all(sum(len(r) + 1 for r in rows) <= 12 for rows, _ in batches)  # 4 tokens each: 3 per batch
    assert sorted(len(rows) for rows, _ in batches) == [1, 1, 3, 3]
    assert {opt.length_penalty for _, opt in batches} == {1.0, 0.5}


def test_sentences_join_a_running_beam_search_from_the_head_of_the_queue():
    recorder = Recorder()
    recorder.gate.clear()
    worker = started(recorder, BatchLimits(batch_tokens=12, max_wait_ms=0))
    long = worker.submit(["a b c d e f"], BEAM)  # 6 steps; held at its first step
    time.sleep(0.1)
    short = worker.submit(["a", "a b"], BEAM)
    other = worker.submit(["x"], GREEDY)  # a different search: nothing queued after it may join
    late = worker.submit(["c"], BEAM)
    recorder.gate.set()
    texts = [f.result(10).translation.text for f in long + short + other + late]
    worker.stop(10)
    assert texts == ["1 1 1 1 1 1", "1", "1 1", "1", "1"]
    assert recorder.sessions[0] == [(0, [6]), (1, [1, 2])]  # joined after step 1, answered as they ended
    assert recorder.sessions[1] == [(0, [1])] and len(recorder.batches) == 1  # after the greedy batch


def test_a_running_search_takes_no_more_than_batch_tokens():
    recorder = Recorder()
    recorder.gate.clear()
    worker = started(recorder, BatchLimits(batch_tokens=9, max_wait_ms=0))
    first = worker.submit(["a b c d e f"], BEAM)  # 7 tokens with </s>
    time.sleep(0.1)
    more = worker.submit(["a", "a b c"], BEAM)  # 2 fit beside it, 4 do not
    recorder.gate.set()
    [f.result(10) for f in first + more]
    worker.stop(10)
    assert recorder.sessions[0][:2] == [(0, [6]), (1, [1])]
    assert (0, [3]) not in recorder.sessions[0][:2] and sum(len(a[1]) for s in recorder.sessions for a in s) == 3


def test_the_first_sentence_waits_max_wait_for_company():
    recorder = Recorder()
    worker = started(recorder, BatchLimits(max_wait_ms=300))
    a = worker.submit(["a b"], GREEDY)
    time.sleep(0.05)
    b = worker.submit(["c d"], GREEDY)
    a[0].result(10), b[0].result(10)
    worker.stop(10)
    assert [len(rows) for rows, _ in recorder.batches] == [2]


def test_a_full_queue_refuses_the_whole_request_at_once():
    recorder = Recorder()
    recorder.gate.clear()
    worker = started(recorder, BatchLimits(max_queue=3, max_wait_ms=0))
    worker.submit(["a"], GREEDY)
    time.sleep(0.1)  # taken by the worker, held at the gate
    worker.submit(["a", "b"], GREEDY)
    t0 = time.monotonic()
    with pytest.raises(QueueFull, match="queue bound of 3"):
        worker.submit(["c", "d"], GREEDY)
    assert time.monotonic() - t0 < 0.5 and worker.depth == 2
    worker.submit(["e"], GREEDY)  # what fits is still taken
    recorder.gate.set()
    worker.stop(10)


def test_cancelled_sentences_are_never_decoded():
    recorder = Recorder()
    recorder.gate.clear()
    worker = started(recorder, BatchLimits(max_wait_ms=0))
    worker.submit(["a"], GREEDY)
    time.sleep(0.1)
    gone = worker.submit(["x y", "z w"], SearchOptions(beam_size=1, length_penalty=0.3))
    kept = worker.submit(["k"], GREEDY)
    assert all(f.cancel() for f in gone)
    recorder.gate.set()
    assert kept[0].result(10).translation.text == "1"
    worker.stop(10)
    assert [opt.length_penalty for _, opt in recorder.batches] == [1.0, 1.0]


def test_stop_finishes_the_queue_then_refuses():
    recorder = Recorder(delay=0.05)
    worker = started(recorder, BatchLimits(batch_tokens=2, max_wait_ms=0))
    futures = worker.submit(["a", "b", "c", "d"], GREEDY)
    worker.stop(10)
    assert all(f.done() and f.result().translation.text == "1" for f in futures)
    with pytest.raises(NotReady):
        worker.submit(["e"], GREEDY)


def test_calls_run_on_the_worker_in_their_turn():
    recorder = Recorder()
    worker = started(recorder)
    where = worker.call(lambda t: (threading.current_thread().name, t is recorder)).result(10)
    assert where == ("model-worker", True)
    failing = worker.call(lambda t: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(10)
    worker.stop(10)


def test_a_failed_load_is_reported_and_nothing_is_accepted():
    reasons = []

    def load():
        raise RunError("run: no model.safetensors")

    worker = ModelWorker(load, on_fatal=reasons.append)
    with pytest.raises(NotReady, match="loading"):
        worker.submit(["a"], GREEDY)
    worker.start()
    worker.stop(10)
    assert [str(r) for r in reasons] == ["run: no model.safetensors"] and not worker.ready.is_set()
    with pytest.raises(NotReady):
        worker.submit(["a"], GREEDY)


def test_between_runs_after_every_batch_call_and_search_step():
    """serve hands freed memory back there (runtime.FreedMemoryReturn): it must run while the worker
    is busy, not only when the queue runs dry."""
    recorder, seen = Recorder(), []
    recorder.gate.clear()
    worker = started(recorder, BatchLimits(batch_tokens=4, max_wait_ms=0), between=lambda: seen.append(1))
    greedy = worker.submit(["a", "b", "c"], GREEDY)  # 2 tokens each: two batches
    beam = worker.submit(["a b c"], BEAM)  # 3 steps
    call = worker.call(lambda t: None)
    recorder.gate.set()
    [f.result(10) for f in greedy + beam + [call]]
    worker.stop(10)
    assert len(recorder.batches) == 2 and recorder.sessions[0] == [(0, [3])]
    assert len(seen) == 2 + 3 + 1 + 1  # the batches, the steps and the search's end, the call
