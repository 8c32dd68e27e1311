"""`transformer-cli import`: a Hugging Face MarianMTModel (OPUS-MT) directory in, a run directory out."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.errors import UserError, fail

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_cli(
        source: Path = O(..., "--from", help="A local MarianMTModel directory in the OPUS-MT layout (config.json, "
                         "model.safetensors, source.spm, target.spm, vocab.json, ...)."),
        out: Path = O(..., "--out", "-o", help="Run directory to write (new or empty)."),
    ) -> None:
        """Import an OPUS-MT / Hugging Face Marian translator as a run directory: translate, inspect-attention,
        explain, export and train --init-from then work on it."""
        from transformer_cli.importers import import_marian

        try:
            done = import_marian(source, out)
        except UserError as e:
            fail(e)
        c = done.model_config
        print(f"imported {source} -> {done.run_dir} ({done.src_lang}->{done.tgt_lang}, {c.n_encoder_layers}+"
              f"{c.n_decoder_layers} layers, d_model {c.d_model}, {c.activation}, vocabulary {c.src_vocab_size}"
              f"{'' if c.share_embeddings else ' / ' + str(c.tgt_vocab_size)})")
        if done.language_codes:
            shown = " ".join(done.language_codes[:8]) + (" ..." if len(done.language_codes) > 8 else "")
            print(f"target-language tokens (start each source line with one): {shown}")
