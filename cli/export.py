"""`transformer-cli export`: a trained run as a CTranslate2, Hugging Face (Marian) or ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.errors import UserError, fail

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cli(
        model: Path = O(..., "--model", "-m", help="Run directory from 'train'."),
        format: str = O(..., "--format", "-f", help="ctranslate2 | hf | onnx"),
        out: Path = O(..., "--out", "-o", help="Directory to write (new or empty)."),
        quantization: Optional[str] = O(None, "--quantization",
                                        help="ctranslate2 only: int8 | int8_float32 | int8_float16 | float16 | ..."),
        overwrite: bool = O(False, "--overwrite", help="Replace an earlier export in --out."),
    ) -> None:
        """Export a trained model for CTranslate2, Hugging Face Transformers or ONNX Runtime."""
        from transformer_cli.exporters import export

        try:
            done = export(model, format, out, quantization, overwrite)
        except UserError as e:
            fail(e)
        print(f"wrote {done} ({format}); see {done / 'README.md'} for how to use it")
