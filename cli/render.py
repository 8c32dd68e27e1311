"""Builders that return rich renderables. They never print."""

from __future__ import annotations

from rich.table import Table


def prepare_summary(manifest: dict) -> Table:
    """Pairs read, kept and dropped per reason, per split; lengths; <unk> share."""
    splits = manifest["splits"]
    reasons = list(next(iter(splits.values()))["dropped"])
    names = [split for split in ("train", "validation", "test") if split in splits]
    table = Table(title=f"prepared {manifest['src_lang']} → {manifest['tgt_lang']} "
                        f"from {manifest['source']['name']}", title_justify="left")
    table.add_column("pairs / tokens")
    for split in names:
        table.add_column(split, justify="right")
    col = [splits[n] for n in names]
    table.add_row("read", *(f"{s['read']:,}" for s in col))
    table.add_row("kept", *(f"{s['kept']:,}" for s in col), style="bold")
    for r in reasons:
        table.add_row(f"dropped: {r}", *(f"{s['dropped'][r]:,}" for s in col))
    table.add_row("src length mean/p95/max", *(_lengths(s["src_len"]) for s in col))
    table.add_row("tgt length mean/p95/max", *(_lengths(s["tgt_len"]) for s in col))
    table.add_row("src <unk> share", *(f"{s['src_unk']:.2%}" for s in col))
    table.add_row("tgt <unk> share", *(f"{s['tgt_unk']:.2%}" for s in col))
    tok = manifest["tokenizer"]
    vocab = (f"joint vocabulary {tok['src_vocab_size']:,}" if tok["joint"]
             else f"vocabularies {tok['src_vocab_size']:,} / {tok['tgt_vocab_size']:,}")
    source = tok.get("from_run")
    made = f"the tokenizer of {source['path']}: {vocab}" if source else f"BPE {vocab}, NFKC"
    table.caption = "; ".join([made, *manifest.get("notes", {}).values()])
    table.caption_justify = "left"
    return table


def _lengths(d: dict) -> str:
    return f"{d['mean']:.1f} / {d['p95']:.0f} / {d['max']:.0f}"


# ---- attention tables ---------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402

from rich.console import Group, RenderableType  # noqa: E402
from rich.cells import cell_len  # noqa: E402
from rich.style import Style  # noqa: E402
from rich.text import Text  # noqa: E402

MASKED = "·"


@dataclass(frozen=True)
class AttentionGrid:
    """One map to draw: rows = queries, columns = keys; values[i][j] None where masked."""

    title: str
    row_tokens: list[str]
    col_tokens: list[str]
    values: list[list[float | None]]
    is_scores: bool = False
    signed: bool = False  # a difference of two maps: +/- two decimals, red above 0, blue below


def cell_style(weight: float) -> Style:
    """Background intensity follows the weight (white -> deep blue); text stays readable."""
    w = min(max(weight, 0.0), 1.0)
    r, g, b = int(255 - 205 * w), int(255 - 175 * w), int(255 - 55 * w)
    return Style(bgcolor=f"rgb({r},{g},{b})", color="white" if w > 0.55 else "black")


def diff_style(d: float) -> Style:
    """Red for more weight, blue for less, intensity by size (a difference of 1 is full)."""
    w = min(abs(d), 1.0)
    if d >= 0:
        return Style(bgcolor=f"rgb(255,{int(255 - 180 * w)},{int(255 - 180 * w)})", color="black")
    return Style(bgcolor=f"rgb({int(255 - 180 * w)},{int(255 - 180 * w)},255)", color="black")


def attention_table(grid: AttentionGrid, col_start: int = 0, col_end: int | None = None,
                    caption: str | None = None) -> Table:
    """A rich Table of grid columns [col_start, col_end): two decimals (or scores), the row's
    largest value bold and underlined, masked cells as '·'."""
    col_end = len(grid.col_tokens) if col_end is None else col_end
    table = Table(title=grid.title, title_justify="left", caption=caption, caption_justify="left",
                  show_lines=False, pad_edge=False, padding=(0, 1))
    table.add_column("", style="bold", no_wrap=True)
    for tok in grid.col_tokens[col_start:col_end]:
        table.add_column(tok, justify="right", no_wrap=True, overflow="ellipsis")
    for tok, row in zip(grid.row_tokens, grid.values):
        present = [v for v in row if v is not None]
        best = max(present) if present else None
        cells: list[Text] = []
        for v in row[col_start:col_end]:
            if v is None:
                cells.append(Text("-inf" if grid.is_scores else MASKED, style="dim"))
                continue
            if grid.signed:
                cells.append(Text(f"{v:+.2f}", style=diff_style(v)))
                continue
            text = f"{v:.2f}" if not grid.is_scores else f"{v:.1f}"
            style = cell_style(v) if not grid.is_scores else Style()
            if v == best:
                style += Style(bold=True, underline=True)
            cells.append(Text(text, style=style))
        table.add_row(Text(tok), *cells)
    return table


def fit_tables(grid: AttentionGrid, width: int) -> list[Table]:
    """The grid as one table, or as blocks of columns that each fit `width`."""
    # display cells (Hangul is two wide) + one space of padding each side + one border
    label = max([cell_len(t) for t in grid.row_tokens] + [1]) + 3 + 1
    widths = [max(cell_len(t), 5 if grid.is_scores else 4) + 3 for t in grid.col_tokens]
    blocks, start, used = [], 0, label
    for j, w in enumerate(widths):
        if used + w > width and j > start:
            blocks.append((start, j))
            start, used = j, label
        used += w
    blocks.append((start, len(widths)))
    if len(blocks) == 1:
        return [attention_table(grid)]
    n = len(widths)
    return [attention_table(grid, s, e, caption=f"columns {s + 1}–{e} of {n} ▸" if e < n else
                            f"columns {s + 1}–{e} of {n}") for s, e in blocks]


def heads_summary_table(rows: list[tuple[str, int, int, object, str]]) -> Table:
    """rows: (kind, layer, head, HeadStats, top token)."""
    table = Table(title="attention heads", title_justify="left")
    for name, justify in (("kind", "left"), ("layer", "right"), ("head", "right"), ("entropy", "right"),
                          ("mean max", "right"), ("diagonal", "right"), ("most attended", "left")):
        table.add_column(name, justify=justify)
    for kind, layer, head, s, token in rows:
        table.add_row(kind, str(layer), str(head), f"{s.entropy:.2f}", f"{s.mean_max:.2f}",
                      f"{s.diagonal:.2f}", token)
    table.caption = ("entropy in nats (low = focused); diagonal = weight within one key of the "
                     "proportional diagonal")
    table.caption_justify = "left"
    return table


def alignment_table(pairs: list[tuple[str, str, float]]) -> Table:
    table = Table(title="word alignment from cross-attention", title_justify="left")
    table.add_column("output word")
    table.add_column("source word")
    table.add_column("weight", justify="right")
    for out_word, src_word, w in pairs:
        table.add_row(out_word, src_word, f"{w:.2f}")
    return table


def side_by_side(tables: list[Table]) -> RenderableType:
    from rich.columns import Columns

    return Columns(tables, padding=(1, 2)) if len(tables) > 1 else Group(*tables)
