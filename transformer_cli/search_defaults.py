"""RUN/search.json: the search settings a model was chosen with, used wherever a caller leaves them out.

    {"length_penalty": 1.8, "length_style": "gnmt",
     "chosen": {"on": "500 validation sentences", "beam_size": 5, "bleu": {"0.6": 42.91, "1": 43.02, ...}}}

`train` writes it when its config says choose_length_penalty (the `small` preset does): after the
last step it translates the validation sample with beam 5 at each of LENGTH_PENALTIES and keeps the
one with the best BLEU (the test set is never read). How strongly a model should be pushed towards
longer outputs depends on how it was trained (label smoothing flattens its distributions: issue 26,
bench/RESULTS.md), so the run carries its own value, as a Hugging Face model carries its
generation_config.json. `translate`, load_run() and `serve` start from these values; a flag or a
request field still overrides each one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from transformer.files import atomic_write_text
from transformer.json_text import loads

from transformer_cli.errors import RunError

SEARCH_FILE = "search.json"
FIELDS = ("beam_size", "length_penalty", "length_style")  # what the file may set (SearchOptions' fields)
LENGTH_PENALTIES = (0.6, 1.0, 1.4, 1.8, 2.2)  # what train tries; 1.0 is translate's own default
CHOICE_BEAM = 5  # the beam size train chooses with: translate's default
KINDS = {"beam_size": (int, "an integer"), "length_penalty": ((int, float), "a number"),
         "length_style": (str, "a string")}


def read_search(run_dir: str | Path) -> dict:
    """The search fields RUN/search.json sets ({} without the file), each checked as SearchOptions
    checks it; a file that cannot be used is a RunError naming it. Other keys are left alone."""
    from transformer_cli.translator import SearchOptions

    path = Path(run_dir) / SEARCH_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: cannot be read ({e}); delete it to search with the built-in defaults") from None
    try:
        document = loads(text)
    except ValueError as e:
        raise RunError(f"{path} is not valid JSON ({e}); delete it to search with the built-in defaults") from None
    if not isinstance(document, dict):
        raise RunError(f"{path} must hold a JSON object such as {{\"length_penalty\": 1.4}}")
    fields = {k: document[k] for k in FIELDS if k in document}
    for name, value in fields.items():
        kinds, words = KINDS[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise RunError(f"{path}: {name} must be {words}, got {value!r}")
    if "length_penalty" in fields:
        fields["length_penalty"] = float(fields["length_penalty"])
    try:
        SearchOptions(**fields)
    except RunError as e:
        raise RunError(f"{path}: {e}") from None
    return fields


def agreed_search(run_dirs: list[str | Path]) -> dict:
    """The search fields every run's search.json sets to the same value (an ensemble searches once)."""
    found = [read_search(d) for d in run_dirs]
    first = found[0] if found else {}
    return {k: v for k, v in first.items() if all(k in f and f[k] == v for f in found[1:])}


def options_for(run_dirs: list[str | Path], base=None, **given):
    """SearchOptions: the fields `given` that are not None (flags the user typed), over the runs'
    search.json, over `base` (default SearchOptions()): the options translate and serve search with."""
    from transformer_cli.translator import SearchOptions

    return overriding(base or SearchOptions(), agreed_search(run_dirs), given)


def overriding(base, *layers: dict):
    """SearchOptions `base` with each layer's fields over it in turn, a None value leaving what lies
    beneath (a flag or a field left out); checked once, as a whole."""
    fields: dict = {}
    for layer in layers:
        fields.update({k: v for k, v in layer.items() if v is not None})
    return replace(base, **fields)


def write_search(run_dir: str | Path, fields: dict, chosen: dict) -> None:
    """RUN/search.json with `fields` (a subset of FIELDS) and the record of how they were chosen."""
    document = {**{k: fields[k] for k in FIELDS if k in fields}, "chosen": chosen}
    atomic_write_text(Path(run_dir) / SEARCH_FILE, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class LengthPenaltyChoice:
    """What choose_length_penalty found: the best alpha and the BLEU of every alpha tried."""

    length_penalty: float
    bleu: dict[float, float]  # alpha -> BLEU of the validation sample
    sentences: int
    beam_size: int = CHOICE_BEAM

    def record(self) -> dict:
        """How the value was chosen, as search.json keeps it."""
        return {"on": f"{self.sentences} validation sentences", "beam_size": self.beam_size,
                "bleu": {f"{a:g}": round(b, 2) for a, b in self.bleu.items()}}


def choose_length_penalty(translator, sources: list[str], references: list[str],
                          alphas: tuple[float, ...] = LENGTH_PENALTIES, beam_size: int = CHOICE_BEAM,
                          should_stop: Callable[[], bool] = lambda: False) -> LengthPenaltyChoice | None:
    """The length penalty (GNMT's, translate's default style) whose beam search gives the best
    sacreBLEU on (sources, references), the first of alphas on a tie; None when should_stop() turned
    True between two of them. translator: a transformer_cli.translator.Translator."""
    from transformer_cli.scoring import score
    from transformer_cli.translator import SearchOptions

    bleu: dict[float, float] = {}
    for alpha in alphas:
        if should_stop():
            return None
        options = SearchOptions(beam_size=beam_size, length_penalty=alpha, length_style="gnmt")
        hyps = [t.text for t in translator.translate(sources, options)]
        bleu[alpha] = score(hyps, references).bleu
    best = max(alphas, key=lambda a: (bleu[a], -alphas.index(a)))
    return LengthPenaltyChoice(best, bleu, len(sources), beam_size)
