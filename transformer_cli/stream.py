"""Lines in, translations out, one per line and in order: what `translate` does, as library calls.

    from transformer_cli import load_run, SearchOptions
    from transformer_cli.stream import translate_files
    report = translate_files(load_run("work/demo/run"), [Path("in.txt")], Path("out.txt"))
    report.stats.lines, report.stats.truncated, report.scores      # what happened, returned

translate_lines() is the loop (raw lines -> output lines, chunk by chunk, counts back); translate_files()
adds the inputs, the output file (written atomically: transformer.files.Output) and the scoring.
A companion file read line by line beside the input (Companion) gives each line a target prefix
(--prefix-file) or, for score_files() (--score-reference), the target to score instead of searching;
with tsv=True (--tsv) each input line carries its own prefix: source<TAB>target prefix (split_tsv).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from data.errors import DataError
from data.textfiles import (check_input_file, check_output_file, decode_line, read_chunks, read_lines,
                            without_bom)
from transformer.files import Output

from transformer_cli.errors import RunError, named
from transformer_cli.runtime import check_range
from transformer_cli.scoring import Scores, score
from transformer_cli.translator import SearchOptions, Translation, Translator

FORMATS = ("text", "jsonl")


class Stopped(RunError):
    """translate_files was interrupted (Ctrl-C, or SIGTERM: errors.Terminated) or could not write;
    the message says where the lines done so far are; `interrupt` is the KeyboardInterrupt, if any."""

    def __init__(self, message: str, interrupt: KeyboardInterrupt | None = None) -> None:
        super().__init__(message)
        self.interrupt = interrupt


@dataclass
class StreamStats:
    """What translating a stream of lines met, counted as it went."""

    lines: int = 0  # input lines translated (= output lines written)
    invalid_utf8: int = 0  # lines whose invalid UTF-8 bytes were replaced with U+FFFD
    truncated: int = 0  # lines longer than the model's positions, cut to fit
    translations: list[str] = field(default_factory=list)  # the texts, when kept for scoring


@dataclass(frozen=True)
class FileReport:
    """What translate_files did: the counts, and the scores when references were given."""

    stats: StreamStats
    scores: Scores | None = None


def check_format(options: SearchOptions, fmt: str, scores: bool) -> None:
    """The output format and the options it can show (text keeps one line per input line)."""
    if fmt not in FORMATS:
        raise RunError(f"{named('fmt')} must be text or jsonl, got {fmt!r}", "fmt")
    if options.n_best > 1 and fmt != "jsonl":
        raise RunError(f"{named('n_best')} > 1 needs {named('fmt')} jsonl (text output keeps one line per "
                       "input line)", "n_best", "fmt")
    if scores and fmt == "jsonl":
        raise RunError(f"{named('scores')} is for text output; jsonl always has the scores", "scores")


def output_line(translator: Translator, source: str, r: Translation, fmt: str = "text", scores: bool = False) -> str:
    """One output line (without its newline): the text, score<TAB>text, or a jsonl record."""
    if fmt == "jsonl":
        return json.dumps({
            "source": source, "translation": r.text, "score": r.score, "tokens": r.tokens,
            "token_logprobs": r.token_logprobs,
            "nbest": [{"translation": t, "score": s} for t, s in r.nbest],
            "alignment": translator.alignment(r),
        }, ensure_ascii=False)
    return f"{r.score:.4f}\t{r.text}" if scores else r.text


class Companion:
    """A file read in step with the input, one line per input line (a target prefix, a reference to
    score); a count that differs is a RunError naming the file, raised when it shows."""

    def __init__(self, path: Path, param: str) -> None:
        self.path, self.param, self.count = Path(path), param, 0
        self.lines = read_lines(self.path)

    def take(self, n: int) -> list[str]:
        """The next n lines (for the next n input lines)."""
        try:
            lines = list(islice(self.lines, n))
        except DataError as e:
            raise RunError.wrap(e) from None
        self.count += len(lines)
        if len(lines) < n:
            raise RunError(f"{self.path} has {self.count} lines, fewer than the input: give one line per input "
                           f"line", self.param)
        return lines

    def finish(self) -> None:
        """After the last input line: the file must end too."""
        if next(self.lines, None) is not None:
            raise RunError(f"{self.path} has more lines than the input ({self.count}): give one line per input "
                           "line", self.param)


def decoded_chunk(chunk: list[bytes], stats: StreamStats) -> list[str]:
    """A chunk of raw lines as text, invalid UTF-8 replaced (and counted in stats)."""
    decoded = [decode_line(raw) for raw in chunk]
    stats.lines += len(decoded)
    stats.invalid_utf8 += sum(bad for _, bad in decoded)
    return [t for t, _ in decoded]


def translate_lines(translator: Translator, chunks: Iterable[list[bytes]], options: SearchOptions | None = None,
                    fmt: str = "text", scores: bool = False, stats: StreamStats | None = None,
                    keep: bool = False, prefixes: Companion | None = None, tsv: bool = False) -> Iterator[list[str]]:
    """For each chunk of raw input lines (bytes, newline optional), its output lines in order.
    Invalid UTF-8 is replaced (and counted); `stats` is updated as each chunk is done; keep: also
    collect the translations in stats.translations; prefixes: each line's target prefix; tsv: each
    line is source<TAB>target prefix (split_tsv) instead."""
    options = options or translator.defaults  # the run's search.json over SearchOptions()
    check_format(options, fmt, scores)
    check_tsv(tsv, prefixes is not None)
    stats = stats if stats is not None else StreamStats()
    for chunk in chunks:
        texts = decoded_chunk(chunk, stats)
        if tsv:
            texts, given = split_tsv(texts, stats.lines - len(texts) + 1)
        else:
            given = prefixes.take(len(texts)) if prefixes else None
        results = translator.translate(texts, options, given)
        stats.truncated += sum(r.truncated for r in results)
        if keep:
            stats.translations.extend(r.text for r in results)
        yield [output_line(translator, t, r, fmt, scores) for t, r in zip(texts, results)]
    if prefixes:
        prefixes.finish()


def check_tsv(tsv: bool, prefix_file) -> None:
    """tsv lines carry their own prefixes: a prefix file as well is refused."""
    if tsv and prefix_file:
        raise RunError(f"{named('tsv')} lines carry their own prefixes: drop {named('prefix_file')}", "tsv",
                       "prefix_file")


def split_tsv(lines: list[str], first: int = 1) -> tuple[list[str], list[str]]:
    """source<TAB>target prefix lines -> (sources, prefixes), Marian's --tsv; a line without a TAB has
    no prefix. A second TAB is a RunError naming the line (numbered from `first`): which field a TAB
    inside the text belongs to cannot be told."""
    sources, prefixes = [], []
    for number, line in enumerate(lines, first):
        source, _, prefix = line.partition("\t")
        if "\t" in prefix:
            raise RunError(f"input line {number} has {line.count(chr(9))} TABs; {named('tsv')} lines are "
                           "source<TAB>target prefix, with one TAB at most", "tsv")
        sources.append(source)
        prefixes.append(prefix)
    return sources, prefixes


def score_lines(translator: Translator, chunks: Iterable[list[bytes]], references: Companion,
                options: SearchOptions | None = None, fmt: str = "text",
                stats: StreamStats | None = None) -> Iterator[list[str]]:
    """For each chunk of raw source lines, the model's score of each reference line (Translator.score):
    text, the score per line; jsonl, the score, log P, tokens and log-probs."""
    options = options or translator.defaults  # the run's search.json over SearchOptions()
    stats = stats if stats is not None else StreamStats()
    for chunk in chunks:
        texts = decoded_chunk(chunk, stats)
        targets = references.take(len(texts))
        results = translator.score(texts, targets, options)
        stats.truncated += sum(r.truncated for r in results)
        yield [json.dumps({"source": t, "reference": ref, "score": r.score, "log_prob": sum(r.token_logprobs),
                           "tokens": r.tokens, "token_logprobs": r.token_logprobs}, ensure_ascii=False)
               if fmt == "jsonl" else f"{r.score:.4f}" for t, ref, r in zip(texts, targets, results)]
    references.finish()


def read_inputs(inputs: list[Path], buffer_lines: int, stdin: io.BufferedIOBase | None = None
                ) -> Iterator[list[bytes]]:
    """Chunks of raw lines from each input in turn (any readable file: a FIFO, /dev/stdin, <(zcat x));
    without inputs, from `stdin`. A byte-order mark at the start of each input is dropped."""
    if not inputs:
        yield from without_bom(read_chunks(stdin, buffer_lines))
        return
    for path in inputs:
        with open(path, "rb") as f:
            yield from without_bom(read_chunks(f, buffer_lines))


def translate_files(translator: Translator, inputs: list[Path], output: Path | str | None = None,
                    options: SearchOptions | None = None, fmt: str = "text", scores: bool = False,
                    reference: Path | None = None, buffer_lines: int = 256, stdin=None, chunks=None,
                    prefix_file: Path | None = None, tsv: bool = False) -> FileReport:
    """Translate `inputs` (or `chunks` of raw lines, or `stdin`) into `output` (a path, '-' or None:
    stdout), flushed chunk by chunk; score against `reference` when given; prefix_file: one target
    prefix per input line; tsv: input lines are source<TAB>target prefix. An interruption or a write
    error is a RunError that says where the lines done so far are."""
    options = options or translator.defaults  # the run's search.json over SearchOptions()
    companions = [prefix_file] if prefix_file else []
    check_stream_args(options, inputs, output, fmt, scores, reference, buffer_lines, companions)
    check_tsv(tsv, prefix_file)
    stats = StreamStats()
    chunks = chunks if chunks is not None else read_inputs(list(inputs), buffer_lines, stdin)
    prefixes = Companion(prefix_file, "prefix_file") if prefix_file else None
    write_blocks(translate_lines(translator, chunks, options, fmt, scores, stats, keep=reference is not None,
                                 prefixes=prefixes, tsv=tsv), output)
    if reference is None:
        return FileReport(stats)
    return FileReport(stats, score(stats.translations, reference_lines(reference), str(reference)))


def score_files(translator: Translator, inputs: list[Path], references: Path, output: Path | str | None = None,
                options: SearchOptions | None = None, fmt: str = "text", buffer_lines: int = 256,
                stdin=None) -> FileReport:
    """The model's score of each line of `references` given the same line of `inputs` (or stdin),
    into `output` as translate_files writes (--score-reference)."""
    options = options or translator.defaults  # the run's search.json over SearchOptions()
    check_score_args(options)
    check_stream_args(options, inputs, output, fmt, False, None, buffer_lines, [references])
    stats = StreamStats()
    chunks = read_inputs(list(inputs), buffer_lines, stdin)
    write_blocks(score_lines(translator, chunks, Companion(references, "score_reference"), options, fmt, stats),
                 output)
    return FileReport(stats)


def check_score_args(options: SearchOptions, scores: bool = False, reference: Path | None = None,
                     prefix_file: Path | None = None, tsv: bool = False) -> None:
    """Scoring a given target searches nothing: the options that change or report on a search are refused."""
    search_only = {"n_best": options.n_best != 1, "sampling_topk": options.sampling_topk != 1,
                   "sampling_topp": options.sampling_topp < 1.0, "no_repeat_ngram_size": options.no_repeat_ngram_size,
                   "repetition_penalty": options.repetition_penalty != 1.0, "replace_unk": options.replace_unk,
                   "coverage_penalty": options.coverage_penalty != 0.0,
                   "scores": scores, "reference": reference, "prefix_file": prefix_file, "tsv": tsv}
    for name, given in search_only.items():
        if given:
            raise RunError(f"{named('score_reference')} scores the given lines and searches nothing: drop "
                           f"{named(name)}", "score_reference", name)


def write_blocks(blocks: Iterable[list[str]], output: Path | str | None) -> None:
    """Output lines block by block into `output` (atomically, transformer.files.Output), flushed after
    each; an interruption or a write error is a Stopped saying where the lines done so far are."""
    sink = Output(output if output is not None else "-")
    try:
        with sink as out:
            for block in blocks:
                out.write("".join(line + "\n" for line in block))
                out.flush()
    except (KeyboardInterrupt, OSError) as e:
        if sink.stdout:
            raise
        raise Stopped(stopped(e, str(output), sink), e if isinstance(e, KeyboardInterrupt) else None) from None


def stopped(e: BaseException, output: str, sink: Output) -> str:
    """What an interruption or a write error left, in one line."""
    from transformer_cli.errors import Terminated

    if isinstance(e, KeyboardInterrupt):
        why = "terminated" if isinstance(e, Terminated) else "interrupted"
    else:
        why = f"cannot write {output} ({e.strerror})"
    if sink.in_place:
        return f"{why}: the lines done so far were written to {output}"
    kept = sink.kept()
    return f"{why}: {output} was left as it was" + (f"; the lines done so far are in {kept}" if kept else "")


def check_stream_args(options: SearchOptions, inputs: list[Path], output, fmt: str, scores: bool,
                      reference: Path | None, buffer_lines: int, companions: list[Path] = ()) -> None:
    """Everything translate_files can refuse before it reads or writes a line."""
    check_format(options, fmt, scores)
    check_range("buffer_lines", buffer_lines, 1, 10_000_000)
    read = [*inputs, *([reference] if reference else []), *companions]
    try:
        for path in read:
            check_input_file(Path(path))
        if output is not None:
            check_output_file(Path(output), read)
    except DataError as e:
        raise RunError.wrap(e) from None


def reference_lines(reference: Path) -> list[str]:
    """The reference translations, one per line."""
    try:
        return list(read_lines(reference))
    except DataError as e:
        raise RunError.wrap(e) from None
