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
        tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Encode with the tokenizer of this run "
                                                 "directory (from 'train', or an imported model) instead of training "
                                                 "a new BPE: the data to fine-tune it with 'train --init-from'."),
        vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="BPE vocabulary size (default 8000)."),
        min_frequency: Optional[int] = typer.Option(None, "--min-frequency",
                                                    help="Minimum count of a BPE merge (default 2)."),
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
        """Load a parallel corpus, train a BPE tokenizer (or use a run's), write a tokenized memory-mapped dataset."""
        from data.errors import DataError
        from data.prepare import PrepareOptions, prepare, refuse_vocabulary_options

        from cli.progress import stage_progress
        from cli.render import prepare_summary

        if dataset == "demo":
            src, tgt = src or "en", tgt or "ko"
        if not src or not tgt:
            fail("--src and --tgt are required (language codes, e.g. --src de --tgt en)")
        vocabulary = {k: v for k, v in (("vocab_size", vocab_size), ("min_frequency", min_frequency),
                                        ("joint_vocab", False if separate_vocab else None)) if v is not None}
        opts = PrepareOptions(dataset=dataset, src=src, tgt=tgt, config=config, **vocabulary,
                              max_tokens=max_tokens, max_ratio=max_ratio, dedup=dedup, valid_size=valid_size,
                              num_proc=num_proc, seed=seed, tokenizer=None if tokenizer is None else str(tokenizer))
        try:
            if tokenizer is not None:
                refuse_vocabulary_options(list(vocabulary))  # given at all, even with the default value
            with stage_progress(console.err) as report:
                manifest = prepare(opts, out, overwrite=overwrite, report=report)
        except DataError as e:
            fail(e)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the hidden directory is already removed
            word, code = interruption(e)
            fail(f"{word}: {out} was left as it was", code=code)
        console.out.print(prepare_summary(manifest))
        console.out.print(f"wrote {out}")
