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
    table.caption = "; ".join([f"BPE {vocab}, NFKC", *manifest.get("notes", {}).values()])
    table.caption_justify = "left"
    return table


def _lengths(d: dict) -> str:
    return f"{d['mean']:.1f} / {d['p95']:.0f} / {d['max']:.0f}"
