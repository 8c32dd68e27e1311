"""inspect-attention's outputs: grids from the maps, the terminal view, JSON and PNG."""

from __future__ import annotations

import json
import sys
import unicodedata
from dataclasses import replace
from pathlib import Path

from cli import console
from cli.errors import UserError
from cli.render import (AttentionGrid, alignment_table, attention_table, fit_tables, heads_summary_table,
                        side_by_side)
from transformer_cli.plots import new_figure
from transformer_cli.translator import align_words, word_index

TITLES = {"encoder": "encoder self-attention", "decoder": "masked decoder self-attention",
          "cross": "cross-attention (output ← source)"}


def axes(result, kind: str) -> tuple[list[str], list[str]]:
    """(row tokens, column tokens) of a kind of map."""
    if kind == "encoder":
        return result.src_tokens, result.src_tokens
    if kind == "decoder":
        return result.tgt_in_tokens, result.tgt_in_tokens
    return result.out_tokens, result.src_tokens  # row t holds the attention that produced output t


def records(result, kind: str):
    return {"encoder": result.maps.encoder, "decoder": result.maps.decoder, "cross": result.maps.cross}[kind]


def matrix(record, head, use_scores: bool):
    """(query, key) tensor for one head or the mean over heads; None where masked."""
    data = (record.scores if use_scores else record.weights)[0]  # (heads, query, key)
    masked = (record.weights[0] == 0) & record.scores[0].isneginf()
    if head == "mean":
        values, mask = data.masked_fill(masked, 0).mean(0), masked.all(0)
        if use_scores:
            values = data.masked_fill(masked, 0).sum(0) / (~masked).sum(0).clamp(min=1)
    else:
        values, mask = data[head], masked[head]
    return [[None if m else float(v) for v, m in zip(vr, mr)] for vr, mr in zip(values.tolist(), mask.tolist())]


def selected(result, kinds, layer_choice, heads):
    """(kind, layer, head, record, row tokens, column tokens) for every requested map."""
    for kind in kinds:
        rows, cols = axes(result, kind)
        for layer in layer_choice[kind]:
            record = records(result, kind)[layer]
            for head in (["mean"] if heads == "mean" else heads):
                yield kind, layer, head, record, rows, cols


def grids(result, kinds, layer_choice, heads, scores: bool, max_tokens: int) -> list[AttentionGrid]:
    out = []
    for kind, layer, head, record, rows, cols in selected(result, kinds, layer_choice, heads):
        head_name = "mean of heads" if head == "mean" else f"head {head + 1}"
        for use_scores in ([False, True] if scores else [False]):
            values = matrix(record, head, use_scores)
            r, c, note = rows, cols, ""
            if max_tokens and (len(r) > max_tokens or len(c) > max_tokens):
                note = f" (first {max_tokens} tokens ▸)"
                r, c = r[:max_tokens], c[:max_tokens]
                values = [row[:max_tokens] for row in values[:max_tokens]]
            what = "scores QKᵀ/√d_k" if use_scores else "weights"
            out.append(AttentionGrid(f"{TITLES[kind]} · layer {layer + 1} · {head_name} · {what}{note}",
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
        out.print(heads_summary_table(summary_rows(result, kinds, layer_choice)))
    if align:
        out.print(alignment_table(alignment(result)))


def show_compare(result, mine: list[AttentionGrid], theirs: list[AttentionGrid], mine_label: str,
                 their_label: str, diff: bool) -> None:
    """Each map of this model beside the same map of the other (both teacher-forced on this
    model's output), or with diff their difference other - this."""
    out = console.out
    out.print(f"[bold]source[/]      {result.source}", highlight=False)
    out.print(f"[bold]translation[/] {result.translation}  (both models read this output)", highlight=False)
    for a, b in zip(mine, theirs):
        if diff:
            values = [[None if x is None or y is None else y - x for x, y in zip(ra, rb)]
                      for ra, rb in zip(a.values, b.values)]
            grid = replace(a, title=f"{a.title} · {their_label} − {mine_label}", values=values, is_scores=False,
                           signed=True)
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


def summary_rows(result, kinds, layer_choice):
    from transformer.analysis import head_stats

    rows = []
    for kind in kinds:
        _, cols = axes(result, kind)
        for layer in layer_choice[kind]:
            weights = records(result, kind)[layer].weights[0]
            for h in range(weights.size(0)):
                s = head_stats(weights[h])
                rows.append((kind, layer + 1, h + 1, s, cols[s.top_key]))
    return rows


def alignment(result) -> list[tuple[str, str, float]]:
    """(output word, source word, weight) from the last layer's cross-attention."""
    src_pieces, out_pieces = result.src_tokens[:-1], result.out_tokens[:-1]
    src_text, out_text = words_of(src_pieces), words_of(out_pieces)
    return [(out_text[o], src_text[s], w)
            for o, s, w in align_words(result.maps.cross[-1].weights[0], src_pieces, out_pieces)]


def words_of(pieces: list[str]) -> list[str]:
    words: list[str] = []
    for p, w in zip(pieces, word_index(pieces)):
        if w == len(words):
            words.append(p.lstrip("▁"))
        else:
            words[w] += p
    return words


def write_json(result, kinds, layer_choice, heads, output: Path | None) -> None:
    maps = [{"kind": kind, "layer": layer + 1, "head": head if head == "mean" else head + 1,
             "rows": rows, "columns": cols, "weights": matrix(record, head, False),
             "scores": matrix(record, head, True)}
            for kind, layer, head, record, rows, cols in selected(result, kinds, layer_choice, heads)]
    doc = {"source": result.source, "translation": result.translation, "source_tokens": result.src_tokens,
           "target_input_tokens": result.tgt_in_tokens, "output_tokens": result.out_tokens, "maps": maps}
    text = json.dumps(doc, ensure_ascii=False)
    if output:
        output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


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
        fig.savefig(output, dpi=110)
