"""Matplotlib, an optional dependency, set up in one place: a Figure of our own, no pyplot and no
global state, so drawing a plot changes nothing for the rest of the process (or a notebook)."""

from __future__ import annotations


def new_figure(width: float, height: float):
    """A matplotlib Figure (saved with fig.savefig), or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(width, height))
