"""What `train` shows while it runs: a rich live view on a terminal, plain log lines otherwise."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from transformer.training import perplexity


def event_line(event: dict, max_steps: int) -> str:
    if event["event"] == "train":
        return (f"step {event['step']}/{max_steps} epoch {event['epoch'] + 1} loss {event['loss']:.3f} "
                f"ppl {perplexity(event['nll']):.1f} lr {event['lr']:.2e} {event['tokens_per_s']:,.0f} tok/s")
    if event["event"] == "replicas":
        same = "identical" if event["identical"] else "DIFFERENT (a bug: please report it)"
        return f"{event['world_size']} processes at step {event['step']}: weights {same}"
    return (f"eval step {event['step']}: val loss {event['loss']:.3f} ppl {event['ppl']:.1f} "
            f"BLEU {event['bleu']:.2f} chrF {event['chrf']:.2f} (best @ {event['best_step']})")


class PlainDisplay:
    """Periodic log lines, for CI, `| tee` and nohup."""

    def __init__(self, console: Console, max_steps: int) -> None:
        self.console, self.max_steps = console, max_steps

    def __enter__(self) -> "PlainDisplay":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, event: dict) -> None:
        print(event_line(event, self.max_steps), file=self.console.file, flush=True)
        if event["event"] == "eval":
            for src, ref, hyp in event.get("samples", [])[:2]:
                print(f"  src: {src}\n  ref: {ref}\n  hyp: {hyp}", file=self.console.file, flush=True)


class LiveDisplay:
    """Steps with ETA, the latest numbers and the latest samples, redrawn in place."""

    def __init__(self, console: Console, max_steps: int, start_step: int) -> None:
        self.console = console
        self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("steps", total=max_steps, completed=start_step)
        self.train: dict = {}
        self.eval: dict = {}
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LiveDisplay":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def update(self, event: dict) -> None:
        if event["event"] == "train":
            self.train = event
        elif event["event"] == "eval":
            self.eval = event
        else:
            return
        self.progress.update(self.task, completed=event["step"])
        self.live.update(self._render())

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column()
        t, e = self.train, self.eval
        table.add_row("epoch", str(t.get("epoch", 0) + 1), "loss", f"{t['loss']:.3f}" if t else "-")
        table.add_row("lr", f"{t['lr']:.2e}" if t else "-", "tokens/s", f"{t['tokens_per_s']:,.0f}" if t else "-")
        table.add_row("val BLEU", f"{e['bleu']:.2f}" if e else "-", "val chrF", f"{e['chrf']:.2f}" if e else "-")
        table.add_row("val loss", f"{e['loss']:.3f}" if e else "-", "best step", str(e.get("best_step", "-")))
        parts = [self.progress, table]
        for src, _, hyp in e.get("samples", [])[:2]:
            parts.append(f"[dim]{src}[/] → {hyp}")
        return Group(*parts)


class TrainView:
    """The terminal side of a training run: the header once the model exists, then the live view (on a
    terminal) or plain log lines, fed by train()'s callbacks."""

    def __init__(self, out: Console, err: Console) -> None:
        self.out, self.err = out, err
        self.display: LiveDisplay | PlainDisplay | None = None

    def __enter__(self) -> "TrainView":
        return self

    def start(self, start) -> None:
        """start: transformer_cli.training.RunStart."""
        import json

        self.err.print(f"[bold]{'resuming' if start.step else 'training'}[/] preset {start.preset} on {start.device}, "
                       f"{start.parameters:,} parameters, from step {start.step}; run directory {start.run_dir}")
        self.err.print(json.dumps({"model": start.model_config.to_dict(), "training": start.train_config.to_dict()},
                                  indent=2), markup=False, highlight=False)
        max_steps = start.train_config.max_steps
        self.display = (LiveDisplay(self.out, max_steps, start.step) if self.out.is_terminal
                        else PlainDisplay(self.out, max_steps))
        self.display.__enter__()

    def update(self, event: dict) -> None:
        if self.display is not None:
            self.display.update(event)

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            self.display.__exit__(*exc)


def summary_table(state, run_dir: str, best: dict | None, tokens_per_s: float, model_note: str) -> Table:
    table = Table(title="training finished", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("stopped", state.stop_reason)
    table.add_row("steps / epochs", f"{state.step} / {state.epoch + (1 if state.batch_in_epoch else 0)}")
    table.add_row("time", f"{state.elapsed:.0f} s")
    table.add_row("throughput", f"{tokens_per_s:,.0f} target tokens/s")
    if best:
        table.add_row("best step", str(best["step"]))
        table.add_row("best val BLEU / chrF", f"{best['bleu']:.2f} / {best['chrf']:.2f}")
        table.add_row("best val loss / ppl", f"{best['loss']:.3f} / {best['ppl']:.2f}")
    table.add_row("model", f"{run_dir} ({model_note})")
    return table
