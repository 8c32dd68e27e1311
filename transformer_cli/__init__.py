"""transformer-cli as a library: load a trained run, translate, look at its attention, train.

    from transformer_cli import load_run, SearchOptions, train, TrainRequest, export
    run = load_run("work/demo/run")
    run.translate(["I am a student."])                      # [Translation(text='나는 학생이다.', ...)]
    run.inspect("I am a student.").maps.cross[-1].weights   # (1, heads, out_len + 1, src_len + 1)
    export("work/demo/run", "onnx", "work/demo-onnx")        # or "ctranslate2", "hf"

Every problem the caller can fix is a RunError whose message names the file, the value or the option.
"""

from __future__ import annotations

from data.versions import package_version


_EXPORTS = {
    "RunError": "transformer_cli.errors",
    "Inspection": "transformer_cli.translator", "SearchOptions": "transformer_cli.translator",
    "Translation": "transformer_cli.translator", "Translator": "transformer_cli.translator",
    "load_run": "transformer_cli.translator", "load_ensemble": "transformer_cli.translator",
    "RunStart": "transformer_cli.training", "TrainRequest": "transformer_cli.training",
    "TrainResult": "transformer_cli.training", "train": "transformer_cli.training",
    "export": "transformer_cli.exporters", "make_shortlist": "transformer_cli.shortlist",
    "translate_files": "transformer_cli.stream", "translate_lines": "transformer_cli.stream",
    "score_files": "transformer_cli.stream",
    "score": "transformer_cli.scoring",
}
__all__ = [*_EXPORTS, "package_version"]


def __getattr__(name: str):
    """Imported on first use, so `import transformer_cli` (and the command line's start-up) stays light."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transformer_cli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
