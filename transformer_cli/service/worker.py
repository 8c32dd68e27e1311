"""The model worker of `serve`: one thread owns the model; requests queue sentences, which it decodes
together in token-bounded batches, and every sentence's answer comes back on its own Future.

    worker = ModelWorker(lambda: load_run("work/run"), BatchLimits(batch_tokens=4000, max_wait_ms=10))
    worker.start(); worker.ready.wait()
    futures = worker.submit(["Ein Hund läuft.", "Zwei Männer."], SearchOptions(beam_size=5))
    [f.result().translation.text for f in futures]
    worker.call(lambda translator: translator.inspect("Ein Hund.")).result()   # anything else, in turn

Batching across requests is what makes many single-sentence clients as fast as one file: sentences of
different requests (and one request's sentences) share a batch when their search options are equal.
A beam search (beam_size >= 2) is continuous: between steps, the sentences at the head of the queue
with the same options join the running search (up to batch_tokens source tokens live), and each
sentence is answered the step it ends, so the batch stays full instead of waiting for its longest
sentence (Translator.beam_session). Greedy requests are decoded batch by batch.
The queue is bounded (QueueFull at once, never a wait); a Future cancelled before its batch starts
(its client went away) is skipped; stop() finishes what is queued, then ends the thread. `between`
runs after every batch, call and step of a continuous search (serve hands freed memory back there).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable

import torch

from transformer_cli.errors import RunError
from transformer_cli.service.jobs import (Answer, BatchLimits, Call, NotReady, Observer, QueueFull,  # noqa: F401
                                          Sentence)
from transformer_cli.translator import SearchOptions, Translation, Translator


class ModelWorker:
    """The one thread that loads and runs the model; everything else talks to it through futures."""

    def __init__(self, load: Callable[[], Translator], limits: BatchLimits = BatchLimits(),
                 observer: Observer | None = None, on_ready: Callable[[], None] | None = None,
                 on_fatal: Callable[[RunError], None] | None = None,
                 between: Callable[[], object] | None = None) -> None:
        self.load, self.limits, self.observer = load, limits, observer or Observer()
        self.between = between or (lambda: None)  # run between batches and steps (serve: memory back to the OS)
        self.on_ready, self.on_fatal = on_ready or (lambda: None), on_fatal or (lambda error: None)
        self.ready = threading.Event()  # set once the model is loaded
        self.error: RunError | None = None  # why loading failed
        self.translator: Translator | None = None
        self.load_seconds = 0.0
        self._queue: deque[Sentence | Call] = deque()
        self._pending = 0  # sentences in the queue
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)

    def start(self) -> None:
        """Start the thread: it loads the model (ready, or error and on_fatal), then serves the queue."""
        self._thread.start()

    @property
    def depth(self) -> int:
        """Sentences waiting for a batch."""
        return self._pending

    def submit(self, texts: list[str], options: SearchOptions, alignment: bool = False,
               prefixes: list[str] | None = None) -> list[Future]:
        """A Future[Answer] per text, in order; prefixes: a target prefix per text (Translator.translate).
        Empty or blank texts are answered at once with an empty translation (as translate does); all
        or none of the others are queued (QueueFull, NotReady)."""
        translator = self.usable()
        futures: list[Future] = [Future() for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for i in set(range(len(texts))) - set(todo):
            futures[i].set_result(Answer(Translation(""), "" if alignment else None))
        encoded = translator.encode([texts[i].strip() for i in todo])
        forced = translator.target_ids([prefixes[i] for i in todo]) if prefixes else [[] for _ in todo]
        jobs = [Sentence(ids, cut, options, alignment, futures[i], prefix=p, source=texts[i].strip())
                for i, ids, cut, p in zip(todo, encoded.ids, encoded.truncated, forced)]
        self._enqueue(jobs, len(jobs))
        return futures

    def call(self, fn: Callable[[Translator], object]) -> Future:
        """fn(translator) on the worker thread, after what is queued before it."""
        self.usable()
        job = Call(fn, Future())
        self._enqueue([job], 0)
        return job.future

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued job, then end the thread (waiting at most `timeout` seconds)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def usable(self) -> Translator:
        """The loaded translator, or NotReady (still loading, failed, stopping)."""
        if self.error is not None or self._stopping:
            raise NotReady("the model worker has stopped")
        if self.translator is None:
            raise NotReady("the model is still loading")
        return self.translator

    def _enqueue(self, jobs: list, sentences: int) -> None:
        with self._cond:
            if self._stopping:
                raise NotReady("the server is shutting down")
            if sentences and self._pending + sentences > self.limits.max_queue:
                raise QueueFull(f"{self._pending} sentences are queued and {sentences} more would pass the "
                                f"queue bound of {self.limits.max_queue}")
            self._queue.extend(jobs)
            self._pending += sentences
            self.observer.queued(self._pending)
            self._cond.notify_all()

    def _run(self) -> None:
        start = time.monotonic()
        try:
            self.translator = self.load()
        except Exception as e:  # noqa: BLE001 - the server must stop with the reason, not wait forever
            self.error = e if isinstance(e, RunError) else RunError(f"cannot load the model ({type(e).__name__}: {e})")
            self.on_fatal(self.error)
            return
        self.load_seconds = time.monotonic() - start
        self.ready.set()
        self.on_ready()
        while (work := self._next()) is not None:
            if isinstance(work, Call):
                _run_call(work, self.translator)
            elif work[0].options.beam_size == 1:
                self._decode(work)
            else:
                self._stream(work)
            self.between()

    def _next(self) -> Call | list[Sentence] | None:
        """The next call, or batch of sentences with equal options (FIFO); None when stopped and empty."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if isinstance(self._queue[0], Call):
                return self._queue.popleft()
            if self._queue[0].options.beam_size == 1:  # a beam search is joined while it runs: no wait
                self._wait_for_company()
            batch = self._take(self._queue[0].options)
            self._pending -= len(batch)
            self.observer.queued(self._pending)
            return batch

    def _wait_for_company(self) -> None:
        """Hold the first sentence until enough tokens are queued or it has waited max_wait_ms."""
        deadline = self._queue[0].queued_at + self.limits.max_wait_ms / 1000
        while not self._stopping and time.monotonic() < deadline:
            if sum(j.tokens for j in self._queue if isinstance(j, Sentence)) >= self.limits.batch_tokens:
                return
            self._cond.wait(max(0.0, deadline - time.monotonic()))

    def _take(self, options: SearchOptions, budget: int | None = None, head_only: bool = False) -> list[Sentence]:
        """Queued sentences searched with `options`, oldest first, up to `budget` tokens (batch_tokens;
        at least one unless head_only); calls and other options keep their places. head_only: stop
        at the first job that is not such a sentence (joining a running search never overtakes)."""
        batch, kept, tokens = [], deque(), 0
        budget = self.limits.batch_tokens if budget is None else budget
        while self._queue:
            job = self._queue.popleft()
            fits = isinstance(job, Sentence) and job.options == options and (
                (not batch and not head_only) or tokens + job.tokens <= budget)
            if head_only and not fits:
                kept.append(job)
                break
            if fits:
                batch.append(job)
                tokens += job.tokens
            else:
                kept.append(job)
                if isinstance(job, Call):
                    break  # nothing queued after a call overtakes it
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _decode(self, batch: list[Sentence]) -> None:
        """Search a batch and answer each sentence; a sentence whose future was cancelled is skipped."""
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        start, t = time.monotonic(), self.translator
        try:
            hyps = t.search([job.ids for job in batch], batch[0].options, [job.prefix for job in batch])
            answers = [Answer(t.result(nbest, job.ids, job.truncated, job.replacing), None)
                       for job, nbest in zip(batch, hyps)]
            answers = [Answer(a.translation, t.alignment(a.translation)) if job.alignment else a
                       for job, a in zip(batch, answers)]
        except Exception as e:  # noqa: BLE001 - handed to each request, which answers 500 with it
            for job in batch:
                job.future.set_exception(e)
            return
        for job, answer in zip(batch, answers):
            job.future.set_result(answer)
        out_tokens = sum(len(a.translation.tokens) for a in answers)
        self.observer.batch(len(batch), sum(j.tokens for j in batch), out_tokens, time.monotonic() - start)


    def _stream(self, batch: list[Sentence]) -> None:
        """A continuous beam search: `batch` starts it, queued sentences with its options join it
        between steps while they fit in batch_tokens, each is answered the step it ends."""
        t, options, start = self.translator, batch[0].options, time.monotonic()
        live, total, src_tokens, out_tokens = {}, 0, 0, 0
        try:
            session = t.beam_session(options)
            while True:
                joining = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if joining:
                    with torch.inference_mode():
                        session.admit(t.tensor([job.ids for job in joining]), [id(job) for job in joining],
                                      t.prefix([job.prefix for job in joining]))
                    live.update((id(job), job) for job in joining)
                    total += len(joining)
                    src_tokens += sum(job.tokens for job in joining)
                if not session.live:
                    break
                with torch.inference_mode():
                    ended = session.step()
                self.observer.live(session.live)
                self.between()
                for key, nbest in ended:
                    job = live.pop(key)
                    out_tokens += len(nbest[0].tokens)
                    self._answer(job, t.result(nbest, job.ids, job.truncated, job.replacing))
                batch = self._join(options, sum(job.tokens for job in live.values()))
        except Exception as e:  # noqa: BLE001 - handed to each live request, which answers 500 with it
            for job in [*live.values(), *(j for j in batch if j.future.running())]:
                job.future.set_exception(e)
            return
        self.observer.live(0)
        self.observer.batch(total, src_tokens, out_tokens, time.monotonic() - start)

    def _join(self, options: SearchOptions, live_tokens: int) -> list[Sentence]:
        """The sentences at the head of the queue that may join a running search with `options`."""
        with self._cond:
            batch = self._take(options, self.limits.batch_tokens - live_tokens, head_only=True)
            if batch:
                self._pending -= len(batch)
                self.observer.queued(self._pending)
            return batch

    def _answer(self, job: Sentence, translation: Translation) -> None:
        try:
            alignment = self.translator.alignment(translation) if job.alignment else None
        except Exception as e:  # noqa: BLE001 - handed to the request
            job.future.set_exception(e)
            return
        job.future.set_result(Answer(translation, alignment))


def _run_call(job: Call, translator: Translator) -> None:
    if not job.future.set_running_or_notify_cancel():
        return
    try:
        job.future.set_result(job.fn(translator))
    except Exception as e:  # noqa: BLE001 - handed to the caller's future
        job.future.set_exception(e)
