"""What every exporter needs: an output directory, the tokenizers beside the model, and the optional
libraries imported with a clear message when missing."""

from __future__ import annotations

import importlib
from pathlib import Path

from transformer_cli.errors import RunError, named

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
        raise RunError(f"{named('out')} {out} exists and is not a directory", "out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{named('out')} {out} exists and is not empty (use {named('overwrite')} to replace an "
                           "earlier export)", "out", "overwrite")
        if not (out / EXPORT_MARK).is_file():
            raise RunError(f"{named('out')} {out} was not written by 'transformer-cli export'; not replacing it", "out")


EXPORT_MARK = "EXPORTED_BY_TRANSFORMER_CLI"


def finish(out: Path, readme: str) -> None:
    """Write the export's README.md (text `readme`) and the mark that check_out recognises into `out`."""
    (out / "README.md").write_text(readme)
    (out / EXPORT_MARK).write_text("transformer-cli export\n")


def save_tokenizers(toks, out: Path) -> tuple[str, str]:
    """The run's tokenizer file(s) beside the model, under the run's own names; (source, target) names."""
    names = toks.save(out)
    return names[0], names[-1]
