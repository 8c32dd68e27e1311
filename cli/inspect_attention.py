"""`transformer-cli inspect-attention`: the model's attention maps as tables in the terminal."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from cli.errors import UserError, fail
from transformer_cli.runtime import check_decoding, check_range
from data.errors import DataError
from data.textfiles import BOM, check_output_file, decode_argument, decode_line

O = typer.Option
KINDS = ("encoder", "decoder", "cross")


def register(app: typer.Typer) -> None:
    @app.command("inspect-attention")
    def inspect_cli(
        sentence: Optional[str] = typer.Argument(None, help="Source sentence (default: first line of stdin)."),
        model: Path = O(..., "--model", "-m", help="Run directory from 'train'."),
        target: Optional[str] = O(None, "--target", "-t", help="Show teacher-forced attention for this translation."),
        beam_size: int = O(1, "--beam-size", "-b", help="Without --target: translate with this beam (1 = greedy)."),
        kind: str = O("all", "--kind", help="encoder | decoder | cross | all"),
        layer: str = O("last", "--layer", help="N (1-based) | last | all"),
        head: str = O("mean", "--head", help="N (1-based) | mean | all"),
        scores: bool = O(False, "--scores", help="Also show the pre-softmax scores QK^T/sqrt(d_k)."),
        heads_summary: bool = O(False, "--heads-summary", help="One row per layer and head: entropy, max, diagonality."),
        align: bool = O(False, "--align", help="Word alignment read from the last layer's cross-attention."),
        max_tokens: int = O(0, "--max-tokens", help="Show at most this many tokens per axis (0 = all)."),
        fmt: str = O("table", "--format", help="table | json | png"),
        output: Optional[Path] = O(None, "--output", "-o", help="File for json (default stdout) or png."),
        device: str = O("cpu", "--device"),
        checkpoint: Optional[str] = O(None, "--checkpoint", help="Maps of one of the run's checkpoints (step-N) instead of its final model."),
        compare: Optional[str] = O(None, "--compare", help="Also show the same maps of another run, checkpoint directory or step-N."),
        diff: bool = O(False, "--diff", help="With --compare: show the difference (other - this) instead of both."),
    ) -> None:
        """Show encoder self-attention, masked decoder self-attention and cross-attention."""
        try:
            run(InspectJob(sentence, model, target, beam_size, kind, layer, head, scores, heads_summary, align,
                           max_tokens, fmt, output, device, checkpoint, compare, diff))
        except UserError as e:
            fail(e)


@dataclass(frozen=True)
class InspectJob:
    """What one `inspect-attention` call shows: the flags that travel together."""

    sentence: str | None  # None = the first line of stdin
    model: Path  # run directory
    target: str | None = None  # teacher-forced translation; None = the model's own
    beam_size: int = 1  # search for the model's own translation
    kind: str = "all"  # encoder | decoder | cross | all
    layer: str = "last"  # N | last | all
    head: str = "mean"  # N | mean | all
    scores: bool = False  # also QK^T/sqrt(d_k)
    heads_summary: bool = False  # a row per layer and head
    align: bool = False  # word alignment from the last layer's cross-attention
    max_tokens: int = 0  # tokens per axis shown; 0 = all
    fmt: str = "table"  # table | json | png
    output: Path | None = None  # json (default stdout) or png file
    device: str = "cpu"  # cpu | cuda | auto
    checkpoint: str | None = None  # step-N of the run instead of its final model
    compare: str | None = None  # another run, checkpoint directory or step-N: the same maps side by side
    diff: bool = False  # with compare: other - this


def parse_choice(value: str, name: str, count: int, words: tuple[str, ...]) -> list[int] | str:
    """'all' -> every index; a word from `words` -> that word; 'N' -> [N-1] checked against count."""
    if value == "all":
        return list(range(count))
    if value in words:
        return value
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--{name} must be a number from 1 to {count} or one of "
                        f"{', '.join(words + ('all',))}, got {value!r}") from None
    if not 1 <= n <= count:
        raise UserError(f"--{name} {n} does not exist: the model has {name}s 1-{count}")
    return [n - 1]


def read_sentence(sentence: str | None) -> tuple[str, bool]:
    """The sentence argument, or the first line of stdin (a byte-order mark dropped); (text, True if
    invalid UTF-8 was replaced)."""
    if sentence is not None:
        text, invalid = decode_argument(sentence)
        text = text.removeprefix("\ufeff")
    elif sys.stdin is not None and not sys.stdin.isatty():
        text, invalid = decode_line(sys.stdin.buffer.readline().removeprefix(BOM))
    else:
        text, invalid = "", False
    if not text.strip():
        raise UserError("empty sentence: give it as an argument or on stdin")
    return text, invalid


def check_flags(job: InspectJob) -> None:
    if job.kind not in KINDS + ("all",):
        raise UserError(f"--kind must be encoder, decoder, cross or all, got {job.kind!r}")
    if job.fmt not in ("table", "json", "png"):
        raise UserError(f"--format must be table, json or png, got {job.fmt!r}")
    if job.compare and job.fmt != "table":
        raise UserError("--compare shows tables: use it with --format table")
    if job.diff and not job.compare:
        raise UserError("--diff needs --compare OTHER")
    if job.fmt == "png" and job.output is None:
        raise UserError("--format png needs --output FILE.png")
    if job.fmt == "table" and job.output is not None:
        raise UserError("--output is for --format json or png; tables are printed (redirect them with >)")
    check_decoding(job.beam_size)
    check_range("max_tokens", job.max_tokens, 0, 1_000_000)
    if job.output is not None:
        try:
            check_output_file(job.output)
        except DataError as e:
            raise UserError.wrap(e) from None


def run(job: InspectJob) -> None:
    check_flags(job)
    text, invalid = read_sentence(job.sentence)
    target = job.target
    if target is not None:
        target, bad_target = decode_argument(target)
        invalid = invalid or bad_target
    if invalid:
        print("warning: the text was not valid UTF-8; invalid bytes were replaced with U+FFFD", file=sys.stderr)
    from transformer_cli import load_run

    translator = load_run(job.model, job.device, checkpoint=job.checkpoint)
    config = translator.model.config
    kinds = list(KINDS) if job.kind == "all" else [job.kind]
    layers_by_kind = {"encoder": config.n_encoder_layers, "decoder": config.n_decoder_layers,
                      "cross": config.n_decoder_layers}
    layer_choice = {k: ([n - 1] if job.layer == "last" else parse_choice(job.layer, "layer", n, ()))
                    for k, n in layers_by_kind.items() if k in kinds}
    heads = parse_choice(job.head, "head", config.n_heads, ("mean",))
    result = translator.inspect(text, target, job.beam_size)
    if result.truncated:
        print(f"warning: the sentence is longer than {translator.max_src_tokens} tokens and was truncated",
              file=sys.stderr)
    if job.compare:
        return compare(job, translator, result, kinds, layer_choice, heads)
    show(job, result, kinds, layer_choice, heads, config.n_heads)


def compare(job: InspectJob, translator, result, kinds, layer_choice, heads) -> None:
    """The same maps of a second model, teacher-forced on this model's output so the grids align."""
    from cli import attention_view as view
    from transformer_cli.maps import compare as other_maps

    theirs = other_maps(translator, result, job.compare, job.model, job.device)
    mine_label = job.model.name + (f" @ {job.checkpoint}" if job.checkpoint else "")
    a = view.grids(result, kinds, layer_choice, heads, job.scores, job.max_tokens)
    b = view.grids(theirs, kinds, layer_choice, heads, job.scores, job.max_tokens)
    view.show_compare(result, a, b, mine_label, job.compare, job.diff)


def show(job: InspectJob, result, kinds: list[str], layer_choice: dict, heads, n_heads: int) -> None:
    from cli import attention_view as view

    grids = view.grids(result, kinds, layer_choice, heads, job.scores, job.max_tokens)
    if job.fmt == "json":
        view.write_json(result, kinds, layer_choice, heads, job.output)
    elif job.fmt == "png":
        view.write_png(grids, job.output)
        print(f"wrote {job.output}", file=sys.stderr)
    else:
        view.show(result, grids, heads == list(range(n_heads)) and job.head == "all", job.heads_summary, job.align,
                  kinds, layer_choice)
