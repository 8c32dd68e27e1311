"""Models that leave the toolkit: a trained run exported to Hugging Face Transformers (Marian),
CTranslate2 and ONNX. The exporters' libraries are optional (pip install 'transformer-cli[export]')
and imported only here."""

from __future__ import annotations

from pathlib import Path

from transformer.files import atomic_directory

from transformer_cli.errors import RunError, named, os_error_message

FORMATS = ("ctranslate2", "hf", "onnx")


def export(run_dir: str | Path, format: str, out: str | Path, quantization: str | None = None,
           overwrite: bool = False) -> Path:
    """Export the run's model.safetensors (+ tokenizer) to `out` in `format`; returns `out`.
    quantization: CTranslate2's weight type (int8, int8_float32, float16, ...). Problems are RunError."""
    from transformer_cli.exporters.common import check_out
    from transformer_cli.translator import load_run

    if format not in FORMATS:
        raise RunError(f"{named('format')} must be one of {', '.join(FORMATS)}, got {format!r}", "format")
    if quantization and format != "ctranslate2":
        raise RunError(f"{named('quantization')} applies to {named('format')} ctranslate2 only", "quantization",
                       "format")
    if format == "ctranslate2":  # the weight type and the package, before the model is loaded
        from transformer_cli.exporters.ct2 import check_ctranslate2

        check_ctranslate2(quantization)
    out = Path(out).resolve()  # "." and "dir/" have a name to put a temporary directory beside
    if not out.name:
        raise RunError(f"{named('out')} {out}: name a directory to write the model into", "out")
    check_out(out, overwrite)
    translator = load_run(run_dir, "cpu", "fp32", pack=False)  # the exporters read plain layers
    try:
        with atomic_directory(out) as work:  # renamed into place when complete; an earlier export
            write(translator, format, work, out.name, quantization)  # (check_out made sure) goes last
    except OSError as e:
        raise RunError(os_error_message(e)) from None
    return out


def write(translator, format: str, work: Path, name: str, quantization: str | None = None) -> None:
    """Write a loaded model into the existing directory `work` (README snippets name it `name`)."""
    if format == "hf":
        from transformer_cli.exporters.hf import export_hf

        export_hf(translator, work, name)
    elif format == "ctranslate2":
        from transformer_cli.exporters.ct2 import export_ctranslate2

        export_ctranslate2(translator, work, name, quantization)
    else:
        from transformer_cli.exporters.onnx import export_onnx

        export_onnx(translator, work, name)
