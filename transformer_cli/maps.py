"""Attention maps of an Inspection as plain numbers: one head or the mean of the heads, weights or
scores, masked cells as None; the document `inspect-attention --format json` writes (and a server
returns); and the same maps of a second model to compare with. The command line only draws these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformer.checkpoint import MODEL_FILE

from transformer_cli.errors import RunError
from transformer_cli.translator import Inspection, Translator, load_run

KINDS = ("encoder", "decoder", "cross")
Matrix = list[list[float | None]]


@dataclass(frozen=True)
class MapView:
    """One map to show: which kind, layer (0-based) and head ("mean" or 0-based), its axes and values."""

    kind: str  # encoder | decoder | cross
    layer: int
    head: int | str
    rows: list[str]  # query tokens
    columns: list[str]  # key tokens
    weights: Matrix  # softmax weights, None where masked
    scores: Matrix  # QK^T/sqrt(d_k), None where masked (-inf)


def axes(record: Inspection, kind: str) -> tuple[list[str], list[str]]:
    """(row tokens, column tokens) of a kind of map."""
    if kind == "encoder":
        return record.src_tokens, record.src_tokens
    if kind == "decoder":
        return record.tgt_in_tokens, record.tgt_in_tokens
    return record.out_tokens, record.src_tokens  # row t holds the attention that produced output t


def layers_of(record: Inspection, kind: str):
    """The AttentionRecords of one kind, first layer first."""
    return {"encoder": record.maps.encoder, "decoder": record.maps.decoder, "cross": record.maps.cross}[kind]


def matrix(attention, head: int | str, use_scores: bool) -> Matrix:
    """(query, key) values of one head, or the mean over heads ("mean": weights averaged, scores
    averaged over the heads where they are finite); None where every head (or the head) is masked."""
    data = (attention.scores if use_scores else attention.weights)[0].float()  # (heads, query, key)
    masked = (attention.weights[0] == 0) & attention.scores[0].isneginf()
    if head == "mean":
        values, mask = data.masked_fill(masked, 0).mean(0), masked.all(0)
        if use_scores:
            values = data.masked_fill(masked, 0).sum(0) / (~masked).sum(0).clamp(min=1)
    else:
        values, mask = data[head], masked[head]
    return [[None if m else float(v) for v, m in zip(vr, mr)] for vr, mr in zip(values.tolist(), mask.tolist())]


def select(record: Inspection, kinds: list[str], layers: dict[str, list[int]], heads: list[int] | str
           ) -> list[MapView]:
    """Every requested map: for each kind its layers (0-based), for each layer the heads or "mean"."""
    views = []
    for kind in kinds:
        rows, cols = axes(record, kind)
        for layer in layers[kind]:
            attention = layers_of(record, kind)[layer]
            for head in (["mean"] if heads == "mean" else heads):
                views.append(MapView(kind, layer, head, rows, cols, matrix(attention, head, False),
                                     matrix(attention, head, True)))
    return views


def document(record: Inspection, views: list[MapView]) -> dict:
    """The JSON document of inspect-attention --format json (layers and heads 1-based)."""
    maps = [{"kind": v.kind, "layer": v.layer + 1, "head": v.head if v.head == "mean" else v.head + 1,
             "rows": v.rows, "columns": v.columns, "weights": v.weights, "scores": v.scores} for v in views]
    return {"source": record.source, "translation": record.translation, "source_tokens": record.src_tokens,
            "target_input_tokens": record.tgt_in_tokens, "output_tokens": record.out_tokens, "maps": maps}


def difference(mine: Matrix, theirs: Matrix) -> Matrix:
    """theirs - mine, cell by cell; None where either is masked."""
    return [[None if x is None or y is None else y - x for x, y in zip(ra, rb)] for ra, rb in zip(mine, theirs)]


def load_other(spec: str, run_dir: str | Path, device: str = "cpu") -> Translator:
    """A second model to compare with run_dir's: another run directory, a checkpoint directory, or
    one of run_dir's checkpoints ('step-N'). Refused unless it reads and writes the same tokens."""
    path = Path(spec)
    if (path / "config.json").is_file():
        return load_run(path, device)
    if (path / MODEL_FILE).is_file() and (path / "state.json").is_file():
        return load_run(path.parent.parent, device, checkpoint=str(path))
    return load_run(run_dir, device, checkpoint=spec)


def check_comparable(a: Translator, b: Translator, label: str) -> None:
    """Same tokenizers and the same numbers of layers and heads, so every map has a partner."""
    if a.toks.fingerprint() != b.toks.fingerprint():
        raise RunError(f"{label}: its tokenizer differs, so its maps cannot be laid over these token by token")
    ca, cb = a.model.config, b.model.config
    shape = lambda c: (c.n_encoder_layers, c.n_decoder_layers, c.n_heads)  # noqa: E731
    if shape(ca) != shape(cb):
        raise RunError(f"{label}: {shape(cb)} encoder layers, decoder layers and heads against {shape(ca)}")


def compare(translator: Translator, record: Inspection, other_spec: str, run_dir: str | Path,
            device: str = "cpu") -> Inspection:
    """The other model's maps of the same sentence, teacher-forced on this model's output (record),
    so every cell has a partner in `record`'s maps."""
    other = load_other(other_spec, run_dir, device)
    check_comparable(translator, other, other_spec)
    return other.inspect(record.source, target_ids=record.out_ids)


def head_summary(record: Inspection, kinds: list[str], layers: dict[str, list[int]]) -> list[tuple]:
    """One row per kind, layer and head: (kind, layer 1-based, head 1-based, HeadStats, the column
    token the head attends to most)."""
    from transformer.analysis import head_stats

    rows = []
    for kind in kinds:
        _, cols = axes(record, kind)
        for layer in layers[kind]:
            weights = layers_of(record, kind)[layer].weights[0]
            for h in range(weights.size(0)):
                s = head_stats(weights[h])
                rows.append((kind, layer + 1, h + 1, s, cols[s.top_key]))
    return rows
