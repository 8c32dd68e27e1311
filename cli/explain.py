"""`transformer-cli explain`: one sentence through the user's model, in the lecture's order."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from cli.errors import UserError, fail
from cli.inspect_attention import read_sentence
from transformer_cli.runtime import check_decoding, check_range

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain_cli(
        sentence: Optional[str] = typer.Argument(None, help="Source sentence (default: first line of stdin)."),
        model: Path = O(..., "--model", "-m", help="Run directory from 'train'."),
        layer: int = O(1, "--layer", help="Layer shown in detail (1-based)."),
        head: int = O(1, "--head", help="Head shown in detail (1-based)."),
        dims: int = O(6, "--dims", help="Leading dimensions shown of each vector."),
        gradients: bool = O(False, "--gradients", help="Gradient norm at each layer's input, with and without residuals."),
        beam_size: int = O(1, "--beam-size", "-b", help="Translate with this beam and show its search step by step (1 = greedy, no trace)."),
        fmt: str = O("table", "--format", help="table | json"),
    ) -> None:
        """Walk a sentence through the trained model: embeddings, positions, attention, masks, norms, output."""
        try:
            run(sentence, model, layer, head, dims, gradients, fmt, beam_size)
        except UserError as e:
            fail(e)


def run(sentence: str | None, model: Path, layer: int, head: int, dims: int, gradients: bool, fmt: str,
        beam_size: int = 1) -> None:
    if fmt not in ("table", "json"):
        raise UserError(f"--format must be table or json, got {fmt!r}")
    check_range("layer", layer, 1, 1000)
    check_range("head", head, 1, 1000)
    check_range("dims", dims, 1, 64)
    check_decoding(beam_size)
    text, invalid = read_sentence(sentence)
    if invalid:
        print("warning: the text was not valid UTF-8; invalid bytes were replaced with U+FFFD", file=sys.stderr)
    from transformer_cli import load_run
    from transformer_cli.explain import explain

    translator = load_run(model, pack=False)
    check_in_model(translator.model.config, layer, head)
    result = explain(translator, text, layer - 1, head - 1, dims, beam_size, gradients)
    if result.truncated:
        print(f"warning: the sentence is longer than {translator.max_src_tokens} tokens and was truncated",
              file=sys.stderr)
    if fmt == "json":
        import dataclasses
        import json

        print(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
        return
    from cli import explain_view
    from cli.console import out

    for section in explain_view.sections(result, out.width - 4):
        out.print(section)


def check_in_model(config, layer: int, head: int) -> None:
    """--layer and --head (1-based) exist in the model (the library counts from 0)."""
    layers = min(config.n_encoder_layers, config.n_decoder_layers)
    if layer > layers:
        raise UserError(f"--layer {layer} does not exist: the model has layers 1-{layers}")
    if head > config.n_heads:
        raise UserError(f"--head {head} does not exist: the model has heads 1-{config.n_heads}")
