"""What every exporter needs: an output directory, the tokenizers beside the model, and the optional
libraries imported with a clear message when missing."""

from __future__ import annotations

import importlib
from pathlib import Path

from transformer_cli.errors import RunError

EXTRA = "pip install 'transformer-cli[export]'"


def need(module: str, what: str):
    """Import an exporter's library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RunError(f"exporting to {what} needs the {module.split('.')[0]} package: {EXTRA}") from None


def check_out(out: Path, overwrite: bool) -> None:
    """A new or empty directory, or (with overwrite) one this command wrote before; it is replaced
    only once the new export is complete."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"--out {out} exists and is not empty (use --overwrite to replace an earlier export)")
        if not (out / EXPORT_MARK).is_file():
            raise RunError(f"--out {out} was not written by 'transformer-cli export'; not replacing it")


EXPORT_MARK = "EXPORTED_BY_TRANSFORMER_CLI"


def finish(out: Path, readme: str) -> None:
    (out / "README.md").write_text(readme)
    (out / EXPORT_MARK).write_text("transformer-cli export\n")


def save_tokenizers(toks, out: Path) -> tuple[str, str]:
    """tokenizer.json for a joint vocabulary, tokenizer.source.json + tokenizer.target.json otherwise.
    Returns the (source, target) file names."""
    if toks.joint:
        toks.src.save(str(out / "tokenizer.json"))
        return "tokenizer.json", "tokenizer.json"
    toks.src.save(str(out / "tokenizer.source.json"))
    toks.tgt.save(str(out / "tokenizer.target.json"))
    return "tokenizer.source.json", "tokenizer.target.json"
