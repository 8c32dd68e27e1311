"""inspect-attention's outputs: grids from the maps, the terminal view, JSON and PNG."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import replace
from pathlib import Path

from cli import console
from cli.errors import UserError
from cli.render import (AttentionGrid, alignment_table, attention_table, fit_tables, heads_summary_table,
                        side_by_side)
from transformer.files import Output
from transformer_cli import maps
from transformer_cli.plots import new_figure
from transformer_cli.translator import word_alignment

TITLES = {"encoder": "encoder self-attention", "decoder": "masked decoder self-attention",
          "cross": "cross-attention (output ← source)"}


def grids(result, kinds, layer_choice, heads, scores: bool, max_tokens: int) -> list[AttentionGrid]:
    """A titled grid for each selected map (weights, and the scores after them when asked)."""
    out = []
    for view in maps.select(result, kinds, layer_choice, heads):
        head_name = "mean of heads" if view.head == "mean" else f"head {view.head + 1}"
        for use_scores in ([False, True] if scores else [False]):
            values = view.scores if use_scores else view.weights
            r, c, note = view.rows, view.columns, ""
            if max_tokens and (len(r) > max_tokens or len(c) > max_tokens):
                note = f" (first {max_tokens} tokens ▸)"
                r, c = r[:max_tokens], c[:max_tokens]
                values = [row[:max_tokens] for row in values[:max_tokens]]
            what = "scores QKᵀ/√d_k" if use_scores else "weights"
            out.append(AttentionGrid(f"{TITLES[view.kind]} · layer {view.layer + 1} · {head_name} · {what}{note}",
                                     r, c, values, is_scores=use_scores))
    return out


def show(result, grid_list, heads_side_by_side: bool, heads_summary: bool, align: bool, kinds, layer_choice):
    out = console.out
    out.print(f"[bold]source[/]      {result.source}", highlight=False)
    out.print(f"[bold]translation[/] {result.translation}", highlight=False)
    if heads_side_by_side:
        tables = [attention_table(g) for g in grid_list]
        fits = all(out.measure(t).maximum <= out.width for t in tables)
        if fits:
            out.print(side_by_side(tables))
            grid_list = []
    for g in grid_list:
        for table in fit_tables(g, out.width):
            out.print(table)
    if heads_summary:
        out.print(heads_summary_table(maps.head_summary(result, kinds, layer_choice)))
    if align:
        out.print(alignment_table(word_alignment(result)))


def show_compare(result, mine: list[AttentionGrid], theirs: list[AttentionGrid], mine_label: str,
                 their_label: str, diff: bool) -> None:
    """Each map of this model beside the same map of the other (both teacher-forced on this
    model's output), or with diff their difference other - this."""
    out = console.out
    out.print(f"[bold]source[/]      {result.source}", highlight=False)
    out.print(f"[bold]translation[/] {result.translation}  (both models read this output)", highlight=False)
    for a, b in zip(mine, theirs):
        if diff:
            grid = replace(a, title=f"{a.title} · {their_label} − {mine_label}",
                           values=maps.difference(a.values, b.values), is_scores=False, signed=True)
            for table in fit_tables(grid, out.width):
                out.print(table)
            continue
        labelled = [replace(g, title=f"{label} · {g.title}") for label, g in ((mine_label, a), (their_label, b))]
        pair = [attention_table(g) for g in labelled]
        if all(out.measure(t).maximum * 2 + 2 <= out.width for t in pair):
            out.print(side_by_side(pair))
        else:
            for g in labelled:
                for table in fit_tables(g, out.width):
                    out.print(table)


def write_json(result, kinds, layer_choice, heads, output) -> None:
    """The maps as inspect-attention's JSON document, to `output` (a path, '-' or None: stdout)."""
    text = json.dumps(maps.document(result, maps.select(result, kinds, layer_choice, heads)), ensure_ascii=False)
    with Output(output or "-") as f:
        f.write(text + "\n")


CJK_FONTS = ("Noto Sans CJK KR", "NanumGothic", "Noto Sans CJK JP", "Noto Sans CJK SC", "Source Han Sans")


def font_families(grid_list) -> tuple[list[str], bool]:
    """Installed families to draw with (DejaVu Sans first, then a CJK font if one is installed), and
    whether some token needs a CJK glyph that no installed font has. Only installed names are given to
    matplotlib, so it never searches (and warns) for a missing one."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [name for name in CJK_FONTS if name in installed]
    tokens = "".join(t for g in grid_list for t in (*g.row_tokens, *g.col_tokens))
    needs_cjk = any(unicodedata.east_asian_width(ch) in ("W", "F") for ch in tokens)
    return ["DejaVu Sans", *cjk], needs_cjk and not cjk


def write_png(grid_list, output: Path) -> None:
    """Heat maps drawn on a matplotlib Figure of our own (no pyplot, no global settings changed)."""
    n = len(grid_list)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = new_figure(5 * cols, 4.5 * rows)
    if fig is None:
        raise UserError("--format png needs matplotlib: pip install 'transformer-cli[plot]'")
    import warnings

    import matplotlib
    import numpy as np

    families, missing = font_families(grid_list)
    if missing:
        console.err.print("note: no CJK font is installed, so Hangul/CJK subwords are drawn as boxes "
                          "(install Noto Sans CJK or NanumGothic)", markup=False, soft_wrap=True)
    with matplotlib.rc_context({"font.family": families}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        axs = fig.subplots(rows, cols, squeeze=False)
        for ax in axs.flat[n:]:
            ax.axis("off")
        for ax, g in zip(axs.flat, grid_list):
            data = np.array([[np.nan if v is None else v for v in row] for row in g.values], dtype=float)
            ax.imshow(data, cmap="Blues", vmin=None if g.is_scores else 0, vmax=None if g.is_scores else 1)
            ax.set_xticks(range(len(g.col_tokens)), g.col_tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(len(g.row_tokens)), g.row_tokens, fontsize=7)
            ax.set_title(g.title, fontsize=8)
        fig.tight_layout()
        with Output(output, binary=True) as f:  # written beside and renamed (or in place: a device, a pipe)
            fig.savefig(f, dpi=110, format="png")
