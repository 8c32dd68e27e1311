"""`transformer-cli translate`: lines in (stdin or files), translations out, one per line, in order."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from cli.errors import UserError, fail

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("translate")
    def translate_cli(
        model: Path = O(..., "--model", "-m", help="Run directory from 'train'."),
        inputs: Optional[List[Path]] = O(None, "--input", "-i", help="Input file (repeatable); default stdin."),
        output: Optional[Path] = O(None, "--output", "-o", help="Output file; default stdout."),
        beam_size: int = O(5, "--beam-size", "-b", help="1 = greedy."),
        length_penalty: float = O(1.0, "--length-penalty", help="GNMT alpha: score = log P / ((5+|Y|)/6)^alpha."),
        max_len_a: float = O(1.5, "--max-len-a", help="Output length limit a * source length + b."),
        max_len_b: int = O(10, "--max-len-b"),
        n_best: int = O(1, "--n-best", help="Hypotheses per sentence (jsonl output)."),
        batch_tokens: int = O(4000, "--batch-tokens", help="Source tokens per batch."),
        buffer_lines: int = O(256, "--buffer-lines", help="Lines read before translating (less if input pauses)."),
        scores: bool = O(False, "--scores", help="Print score<TAB>translation."),
        fmt: str = O("text", "--format", help="text | jsonl (tokens, log-probs, n-best, alignment)."),
        reference: Optional[Path] = O(None, "--reference", help="Print BLEU/chrF against this file on stderr."),
        device: str = O("cpu", "--device", help="cpu | cuda | auto"),
        threads: int = O(0, "--threads", help="Torch threads (0 = default)."),
        precision: str = O("fp32", "--precision", help="fp32 | bf16"),
    ) -> None:
        """Translate lines from stdin (or --input files) to stdout, one output line per input line."""
        from transformer_cli import SearchOptions

        try:
            search = SearchOptions(beam_size, n_best, length_penalty, max_len_a, max_len_b, batch_tokens)
            run(TranslateJob(model, tuple(inputs or ()), output, search, fmt, scores, reference, buffer_lines,
                             device, threads, precision))
        except UserError as e:
            fail(str(e))


@dataclass(frozen=True)
class TranslateJob:
    """What one `translate` call does: the flags that travel together."""

    model: Path  # run directory
    inputs: tuple[Path, ...]  # input files; empty = stdin
    output: Path | None  # None = stdout
    search: "SearchOptions"  # beam size, n-best, length penalty and limits, batch tokens
    fmt: str = "text"  # text | jsonl
    scores: bool = False  # score<TAB>translation
    reference: Path | None = None  # BLEU/chrF against this file
    buffer_lines: int = 256  # lines read before translating (fewer when the input pauses)
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch threads, 0 = default
    precision: str = "fp32"  # fp32 | bf16


def check_flags(job: TranslateJob) -> None:
    """The flags SearchOptions does not check: output format, files, buffering."""
    from data.errors import DataError
    from data.textfiles import check_output_file
    from transformer_cli.runtime import check_range

    if job.fmt not in ("text", "jsonl"):
        raise UserError(f"--format must be text or jsonl, got {job.fmt!r}")
    if job.search.n_best > 1 and job.fmt != "jsonl":
        raise UserError("--n-best > 1 needs --format jsonl (text output keeps one line per input line)")
    if job.scores and job.fmt == "jsonl":
        raise UserError("--scores is for text output; jsonl always has the scores")
    check_range("--buffer-lines", job.buffer_lines, 1, 10_000_000)
    files = [*job.inputs, *([job.reference] if job.reference else [])]
    for path in files:
        if not path.is_file():
            raise UserError(f"{path}: input file not found")
    if job.output is not None:
        try:
            check_output_file(job.output, files)
        except DataError as e:
            raise UserError(str(e)) from None


def run(job: TranslateJob) -> None:
    from transformer_cli import load_run
    from transformer_cli.runtime import reuse_freed_memory, set_threads

    check_flags(job)
    set_threads(job.threads)
    reuse_freed_memory()
    translator = load_run(job.model, job.device, job.precision)
    interactive = not job.inputs and sys.stdin.isatty()

    def write(out) -> tuple[int, list[str]]:
        return write_translations(out, translator, list(job.inputs), interactive, job, keep=job.reference is not None)

    invalid, hypotheses = write(sys.stdout) if job.output is None else write_atomically(job.output, write)
    warn = lambda m: print(f"warning: {m}", file=sys.stderr)  # noqa: E731
    if translator.truncated:
        warn(f"{translator.truncated} line(s) longer than {translator.max_src_tokens} tokens were truncated")
    if invalid:
        warn(f"{invalid} line(s) were not valid UTF-8; invalid bytes were replaced with U+FFFD")
    if job.reference:
        print(score_against(job.reference, hypotheses), file=sys.stderr)


def write_translations(out, translator, inputs: list[Path], interactive: bool, job: TranslateJob,
                       keep: bool) -> tuple[int, list[str]]:
    """Translate every input line to `out`, one line each, flushed per chunk; returns (invalid UTF-8 lines,
    translations kept for --reference)."""
    from data.textfiles import decode_line, read_chunks

    invalid = 0
    hypotheses: list[str] = []
    for chunk in chunks(inputs, job.buffer_lines, interactive, read_chunks):
        decoded = [decode_line(raw) for raw in chunk]
        invalid += sum(bad for _, bad in decoded)
        texts = [t for t, _ in decoded]
        for text, r in zip(texts, translator.translate(texts, job.search)):
            out.write(format_line(text, r, job.fmt, job.scores, translator) + "\n")
            if keep:
                hypotheses.append(r.text)
        out.flush()
    return invalid, hypotheses


def write_atomically(output: Path, write):
    """write(file) into `output` through AtomicOutput; an interruption or a write error is one line that
    says where the lines already translated are."""
    from data.textfiles import AtomicOutput

    sink = AtomicOutput(output)
    try:
        with sink as out:
            return write(out)
    except (KeyboardInterrupt, OSError) as e:
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"cannot write {output} ({e.strerror})"
        kept = f"; the lines done so far are in {sink.partial}" if sink.partial.exists() else ""
        raise UserError(f"{why}: {output} was left as it was{kept}") from None


def chunks(inputs: list[Path], buffer_lines: int, interactive: bool, read_chunks):
    if interactive:
        while True:
            print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.buffer.readline()
            if not line:
                return
            yield [line]
    if not inputs:
        yield from read_chunks(sys.stdin.buffer, buffer_lines)
        return
    for path in inputs:
        with open(path, "rb") as f:
            yield from read_chunks(f, buffer_lines)


def format_line(source: str, r, fmt: str, scores: bool, translator) -> str:
    if fmt == "jsonl":
        return json.dumps({
            "source": source, "translation": r.text, "score": r.score, "tokens": r.tokens,
            "token_logprobs": r.token_logprobs,
            "nbest": [{"translation": t, "score": s} for t, s in r.nbest],
            "alignment": translator.alignment(source, r),
        }, ensure_ascii=False)
    return f"{r.score:.4f}\t{r.text}" if scores else r.text


def score_against(reference: Path, hypotheses: list[str]) -> str:
    import sacrebleu

    from data.errors import DataError
    from data.textfiles import read_lines

    try:
        refs = list(read_lines(reference))
    except DataError as e:
        raise UserError(str(e)) from None
    if len(refs) != len(hypotheses):
        raise UserError(f"{reference} has {len(refs)} lines but {len(hypotheses)} lines were translated")
    bleu = sacrebleu.corpus_bleu(hypotheses, [refs])
    chrf = sacrebleu.corpus_chrf(hypotheses, [refs])
    return f"{bleu}\n{chrf}"
