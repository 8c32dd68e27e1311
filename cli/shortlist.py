"""`transformer-cli shortlist`: count a model's lexical shortlist from parallel data into its run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.errors import UserError, fail

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("shortlist")
    def shortlist_cli(
        model: Path = O(..., "--model", "-m", help="Run directory from 'train' or 'import'."),
        data: Optional[Path] = O(None, "--data", help="A directory made by 'prepare' with this model's tokenizer "
                                 "(its training split is counted)."),
        src_file: Optional[Path] = O(None, "--src-file", help="Source side of parallel text (instead of --data)."),
        tgt_file: Optional[Path] = O(None, "--tgt-file", help="Target side, one line per source line."),
        k: int = O(20, "--k", help="Target tokens kept per source token (highest Dice coefficient)."),
        frequent: int = O(100, "--frequent", help="Most frequent target tokens every batch keeps."),
    ) -> None:
        """Make RUN/shortlist.safetensors, so that 'translate --shortlist' scores only the target tokens
        likely for each batch's source (CTranslate2's vocabulary map, Marian's lexical shortlist)."""
        from transformer_cli.shortlist import make_shortlist

        try:
            done = make_shortlist(model, data, src_file, tgt_file, k, frequent)
        except UserError as e:
            fail(e)
        print(f"shortlist of {done.k} target tokens per source token (+ the {done.frequent} most frequent) from "
              f"{done.pairs:,} sentence pairs -> {done.path}")
