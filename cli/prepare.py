"""`transformer-cli prepare`: a parallel corpus in, a tokenized dataset and tokenizer out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli import console
from cli.errors import fail, interruption


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare_cli(
        dataset: str = typer.Option(..., "--dataset", "-d", help="demo, a directory ({split}.{lang}[.gz]), "
                                    "a .tsv/.jsonl file, a prefix (PREFIX.de + PREFIX.en), a datasets save_to_disk "
                                    "directory, or a hub name."),
        src: Optional[str] = typer.Option(None, "--src", help="Source language code (demo: en)."),
        tgt: Optional[str] = typer.Option(None, "--tgt", help="Target language code (demo: ko)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
        config: Optional[str] = typer.Option(None, "--config", help="Hub dataset configuration."),
        vocab_size: int = typer.Option(8000, "--vocab-size", help="BPE vocabulary size."),
        min_frequency: int = typer.Option(2, "--min-frequency", help="Minimum count of a BPE merge."),
        separate_vocab: bool = typer.Option(False, "--separate-vocab",
                                            help="One vocabulary per side instead of a joint one."),
        max_tokens: int = typer.Option(256, "--max-tokens", help="Drop pairs longer than this (tokens)."),
        max_ratio: float = typer.Option(3.0, "--max-ratio", help="Drop training pairs with a longer length ratio."),
        dedup: bool = typer.Option(False, "--dedup", help="Drop repeated training pairs."),
        valid_size: int = typer.Option(500, "--valid-size",
                                       help="Pairs held out of train when there is no validation split."),
        num_proc: int = typer.Option(1, "--num-proc", help="Processes for encoding."),
        seed: int = typer.Option(0, "--seed", help="Seed of the demo corpus and of held-out splits."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
    ) -> None:
        """Load a parallel corpus, train a BPE tokenizer, write a tokenized memory-mapped dataset."""
        from data.errors import DataError
        from data.prepare import PrepareOptions, prepare

        from cli.progress import stage_progress
        from cli.render import prepare_summary

        if dataset == "demo":
            src, tgt = src or "en", tgt or "ko"
        if not src or not tgt:
            fail("--src and --tgt are required (language codes, e.g. --src de --tgt en)")
        opts = PrepareOptions(dataset=dataset, src=src, tgt=tgt, config=config, vocab_size=vocab_size,
                              min_frequency=min_frequency, joint_vocab=not separate_vocab,
                              max_tokens=max_tokens, max_ratio=max_ratio, dedup=dedup,
                              valid_size=valid_size, num_proc=num_proc, seed=seed)
        try:
            with stage_progress(console.err) as report:
                manifest = prepare(opts, out, overwrite=overwrite, report=report)
        except DataError as e:
            fail(e)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the hidden directory is already removed
            word, code = interruption(e)
            fail(f"{word}: {out} was left as it was", code=code)
        console.out.print(prepare_summary(manifest))
        console.out.print(f"wrote {out}")
