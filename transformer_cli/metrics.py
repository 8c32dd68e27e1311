"""metrics.jsonl: one JSON line per log and validation event; read tolerantly, cut back on resume, plotted."""

from __future__ import annotations

import json
from pathlib import Path

from transformer.files import atomic_write_text
from transformer.json_text import loads
from transformer_cli.plots import new_figure

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> tuple[list[dict], int]:
    """The events of metrics.jsonl and the number of unreadable lines skipped (a run killed in the
    middle of a write leaves a truncated last line)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return [], 0
    events, broken = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = loads(line)
        except json.JSONDecodeError:
            broken += bool(line.strip())
            continue
        if isinstance(event, dict) and isinstance(event.get("step"), int) and "event" in event:
            events.append(event)
        else:
            broken += 1
    return events, broken


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop log lines a killed run wrote after its last checkpoint (they will be written again) and
    lines it left unreadable; returns how many unreadable lines were dropped."""
    events, broken = read_metrics(run_dir)
    if (run_dir / METRICS_FILE).is_file():
        kept = [e for e in events if e["step"] <= step]
        atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in kept))
    return broken


def best_from_metrics(run_dir: Path) -> dict | None:
    """The last validation event of run_dir's metrics.jsonl marked is_best; None before any."""
    best = None
    for event in read_metrics(run_dir)[0]:
        if event["event"] == "eval" and event.get("is_best"):
            best = event
    return best


def plot_curves(run_dir: Path) -> Path | None:
    """curves.png of training loss and validation BLEU (needs matplotlib, an optional dependency).
    Drawn on a Figure of our own: no pyplot, no global matplotlib state."""
    fig = new_figure(10, 4)
    if fig is None:
        return None
    events = read_metrics(run_dir)[0]
    train = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([e["step"] for e in train], [e["loss"] for e in train], label="train loss")
    ax1.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", label="validation loss")
    ax1.set_xlabel("step")
    ax1.legend()
    ax2.plot([e["step"] for e in evals], [e["bleu"] for e in evals], "o-", label="validation BLEU")
    ax2.plot([e["step"] for e in evals], [e["chrf"] for e in evals], "s-", label="validation chrF")
    ax2.set_xlabel("step")
    ax2.legend()
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    return path
