"""`transformer-cli translate`: lines in (stdin or files), translations out, one per line, in order."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from cli.errors import UserError, fail, interruption
from cli.process import skip_teardown

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("translate")
    def translate_cli(
        models: List[Path] = O(..., "--model", "-m", help="Run directory from 'train' or 'import'; repeat it for "
                               "an ensemble (the mean of the models' log-probabilities; same vocabularies)."),
        inputs: Optional[List[Path]] = O(None, "--input", "-i", help="Input file (repeatable); default stdin."),
        output: Optional[Path] = O(None, "--output", "-o", help="Output file ('-' = stdout, default); a device or FIFO is written in place."),
        beam_size: Optional[int] = O(None, "--beam-size", "-b", help="1 = greedy. Default: the run's "
                                     "search.json, else 5.", show_default=False),
        length_penalty: Optional[float] = O(None, "--length-penalty", help="alpha: score = log P / lp(|Y|), |Y| "
                                            "counting </s>. Default: the run's search.json (train chooses it on "
                                            "validation), else 1.0.", show_default=False),
        length_style: Optional[str] = O(None, "--length-style", help="lp: gnmt ((5+|Y|)/6)^alpha | average "
                                        "|Y|^alpha (Hugging Face transformers, CTranslate2, Marian). Default: the "
                                        "run's search.json, else gnmt.", show_default=False),
        max_len_a: float = O(1.5, "--max-len-a", help="Output length limit a * source length + b."),
        max_len_b: int = O(10, "--max-len-b"),
        n_best: int = O(1, "--n-best", help="Hypotheses per sentence (jsonl output); with sampling, samples."),
        sampling_topk: int = O(1, "--sampling-topk", help="Draw each token from the K most probable (0 = all; "
                               "1 = no sampling). Needs --beam-size 1."),
        sampling_topp: float = O(1.0, "--sampling-topp", help="Draw within the smallest set of probability P "
                                 "(nucleus; 1 = off). Needs --beam-size 1."),
        temperature: float = O(1.0, "--temperature", help="Sampling temperature (log p / T)."),
        seed: int = O(0, "--seed", help="Sampling seed: the same seed gives the same output."),
        no_repeat_ngram_size: int = O(0, "--no-repeat-ngram-size", help="No n-gram of this size twice in an "
                                      "output (0 = off)."),
        repetition_penalty: float = O(1.0, "--repetition-penalty", help="CTRL's penalty on tokens already "
                                      "produced (1 = off, > 1 discourages)."),
        coverage_penalty: float = O(0.0, "--coverage-penalty", help="beta of GNMT's coverage penalty: finished "
                                    "hypotheses that left source tokens unattended rank lower (0 = off)."),
        prefix_file: Optional[Path] = O(None, "--prefix-file", help="One target prefix per input line (empty = "
                                        "none): each translation starts with it and goes on from there."),
        tsv: bool = O(False, "--tsv", help="Input lines are source<TAB>target prefix (Marian's --tsv): each "
                      "translation starts with its line's prefix; a line without a TAB has none."),
        score_reference: Optional[Path] = O(None, "--score-reference", help="Search nothing: print the score of "
                                            "each line of this file as the translation of the same input line."),
        replace_unk: bool = O(False, "--replace-unk", help="An <unk> in the output becomes the source token it "
                              "attends to most."),
        batch_tokens: int = O(4000, "--batch-tokens", help="Source tokens per batch."),
        buffer_lines: int = O(256, "--buffer-lines", help="Lines read before translating (less if input pauses)."),
        scores: bool = O(False, "--scores", help="Print score<TAB>translation."),
        fmt: str = O("text", "--format", help="text | jsonl (tokens, log-probs, n-best, alignment)."),
        reference: Optional[Path] = O(None, "--reference", help="Print BLEU/chrF against this file on stderr."),
        device: str = O("cpu", "--device", help="cpu | cuda | auto"),
        threads: int = O(0, "--threads", help="Torch threads (0 = default)."),
        precision: str = O("fp32", "--precision", help="fp32 | bf16 | int8 (CPU: int8 linear layers)"),
        shortlist: bool = O(False, "--shortlist", help="Score only each batch's likely target tokens (the run's "
                            "shortlist.safetensors, made by 'transformer-cli shortlist'): faster, outputs may change."),
    ) -> None:
        """Translate lines from stdin (or --input files) to stdout, one output line per input line."""
        from transformer_cli.search_defaults import options_for

        try:  # the flags typed (None: not typed), over the runs' search.json, over the library's defaults
            search = options_for(models, beam_size=beam_size, length_penalty=length_penalty,
                                 length_style=length_style, n_best=n_best, max_len_a=max_len_a, max_len_b=max_len_b,
                                 batch_tokens=batch_tokens, sampling_topk=sampling_topk,
                                 sampling_topp=sampling_topp, temperature=temperature, seed=seed,
                                 no_repeat_ngram_size=no_repeat_ngram_size,
                                 repetition_penalty=repetition_penalty, replace_unk=replace_unk,
                                 coverage_penalty=coverage_penalty)
            run(TranslateJob(tuple(models), tuple(inputs or ()), output, search, fmt, scores, reference, buffer_lines,
                             device, threads, precision, prefix_file, score_reference, tsv, shortlist))
        except UserError as e:
            stopped_by = getattr(e, "interrupt", None)  # stream.Stopped by Ctrl-C (130) or SIGTERM (143)
            fail(e, interruption(stopped_by)[1] if stopped_by else 1)


@dataclass(frozen=True)
class TranslateJob:
    """What one `translate` call does: the flags that travel together."""

    models: tuple[Path, ...]  # run directories: one, or an ensemble
    inputs: tuple[Path, ...]  # input files; empty = stdin
    output: Path | None  # None or '-' = stdout
    search: "SearchOptions"  # beam size, n-best, length penalty and style, limits, batch tokens
    fmt: str = "text"  # text | jsonl
    scores: bool = False  # score<TAB>translation
    reference: Path | None = None  # BLEU/chrF against this file
    buffer_lines: int = 256  # lines read before translating (fewer when the input pauses)
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch threads, 0 = default
    precision: str = "fp32"  # fp32 | bf16 | int8
    prefix_file: Path | None = None  # one target prefix per input line
    score_reference: Path | None = None  # score these lines instead of searching
    tsv: bool = False  # input lines are source<TAB>target prefix
    shortlist: bool = False  # decode over the run's vocabulary shortlist


def run(job: TranslateJob) -> None:
    """Load the model, translate (transformer_cli.stream.translate_files) and report on stderr."""
    from transformer_cli import load_ensemble
    from transformer_cli.runtime import reuse_freed_memory, set_threads
    from transformer_cli.stream import check_score_args, check_stream_args, check_tsv, score_files, translate_files

    if not job.inputs and sys.stdin is None:
        raise UserError("standard input is closed: give the text on stdin or with --input FILE")
    companions = [p for p in (job.prefix_file, job.score_reference) if p]
    check_stream_args(job.search, list(job.inputs), job.output, job.fmt, job.scores, job.reference,
                      job.buffer_lines, companions)  # before the model is loaded: a wrong flag fails fast
    check_tsv(job.tsv, job.prefix_file)
    if job.score_reference:
        check_score_args(job.search, job.scores, job.reference, job.prefix_file, job.tsv)
    set_threads(job.threads)
    reuse_freed_memory()
    if job.shortlist:
        check_shortlist(job)
    translator = load_ensemble(list(job.models), job.device, job.precision, shortlist=job.shortlist)
    stdin = sys.stdin.buffer if not job.inputs else None
    if job.score_reference:
        report = score_files(translator, list(job.inputs), job.score_reference, job.output, job.search, job.fmt,
                             job.buffer_lines, stdin)
    else:
        interactive = not job.inputs and sys.stdin.isatty() and not job.prefix_file
        report = translate_files(translator, list(job.inputs), job.output, job.search, job.fmt, job.scores,
                                 job.reference, job.buffer_lines, stdin, prompted_lines() if interactive else None,
                                 job.prefix_file, job.tsv)
    warn = lambda m: print(f"warning: {m}", file=sys.stderr)  # noqa: E731
    if report.stats.truncated:
        warn(f"{report.stats.truncated} line(s) longer than {translator.max_src_tokens} tokens were truncated")
    if report.stats.invalid_utf8:
        warn(f"{report.stats.invalid_utf8} line(s) were not valid UTF-8; invalid bytes were replaced with U+FFFD")
    if report.scores:
        print(f"{report.scores.bleu_line}\n{report.scores.chrf_line}", file=sys.stderr)
    skip_teardown()  # output complete and closed: the process may end without the interpreter's teardown


def check_shortlist(job: TranslateJob) -> None:
    """--shortlist is for a search over one model's own vocabulary; refused before the model loads."""
    from transformer_cli.shortlist import check_shortlist_search

    if job.score_reference:
        raise UserError("--score-reference scores the given lines over the whole vocabulary: drop --shortlist")
    check_shortlist_search(job.search)


def prompted_lines():
    """A terminal's lines one at a time, each after a '> ' prompt on stderr."""
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.buffer.readline()
        if not line:
            return
        yield [line]
