"""What `train` shows while it runs: a rich live view on a terminal, plain log lines otherwise."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from transformer.training import perplexity


def event_line(event: dict, max_steps: int) -> str:
    if event["event"] == "train":
        return (f"step {event['step']}/{max_steps} epoch {event['epoch'] + 1} loss {event['loss']:.3f} "
                f"ppl {perplexity(event['nll']):.1f} lr {event['lr']:.2e} {event['tokens_per_s']:,.0f} tok/s")
    if event["event"] == "choosing":
        alphas = ", ".join(f"{a:g}" for a in event["length_penalties"])
        return (f"choosing the length penalty ({alphas}) on {event['sentences']:,} validation sentences, "
                f"beam {event['beam_size']}")
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


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 32) -> str:
    """The last `width` values as block characters, lowest ▁ to highest █."""
    values = values[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)


def clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def config_summary(model, training) -> str:
    """Two lines instead of the whole configuration (which config.json holds)."""
    m, t = model, training
    vocab = (f"vocabulary {m.src_vocab_size:,} shared" if m.share_embeddings
             else f"vocabularies {m.src_vocab_size:,}/{m.tgt_vocab_size:,}")
    stops = [f"{t.max_steps:,} steps"] + ([f"{t.max_epochs} epochs"] if t.max_epochs else []) + \
        ([f"{clock(t.max_time)}"] if t.max_time else [])
    return (f"model: d_model {m.d_model}, {m.n_encoder_layers}+{m.n_decoder_layers} layers, {m.n_heads} heads, "
            f"d_ff {m.d_ff}, {m.norm}-norm, dropout {m.dropout:g}, {vocab}\n"
            f"training: {t.max_tokens:,} tokens x {t.accumulate} per update, {t.schedule} schedule "
            f"({'factor ' + format(t.lr_factor, 'g') if t.schedule == 'noam' else 'peak lr ' + format(t.lr, 'g')}), "
            f"{t.warmup:,} warm-up steps, {cooldown(t)}{decay(t)}label smoothing {t.label_smoothing:g}, "
            f"{r_drop(t)}{t.precision}, "
            f"validation every {t.eval_every:,}; "
            f"stops at {' or '.join(stops)}")


def cooldown(t) -> str:
    """'falling to 0 over the last 20% of the budget, ', '' when off."""
    return f"falling to 0 over the last {t.cooldown:.0%} of the budget, " if t.cooldown else ""


def decay(t) -> str:
    """'weight decay 0.1 (AdamW), ', '' when off (Adam)."""
    return f"weight decay {t.weight_decay:g} (AdamW), " if t.weight_decay else ""


def r_drop(t) -> str:
    """'R-Drop 5 after 2,000 updates, ' ('R-Drop 5, ' from the first), '' when off."""
    if not t.r_drop:
        return ""
    return f"R-Drop {t.r_drop:g}" + (f" after {t.r_drop_from:,} updates, " if t.r_drop_from else ", ")


class Eta:
    """Time left under whichever stopping rule comes first: --max-steps and --max-epochs at the rates
    (steps, batches) measured since this process started, or --max-time."""

    def __init__(self, max_steps: int, max_time: float, max_epochs: int = 0, batches_per_epoch: int = 0) -> None:
        self.max_steps, self.max_time = max_steps, max_time
        self.epoch_batches = max_epochs * batches_per_epoch  # 0: no epoch limit (or unknown)
        self.batches_per_epoch = batches_per_epoch
        self.first: tuple[int, int, float] | None = None  # (step, batches, elapsed) of the first event seen

    def update(self, step: int, elapsed: float, epoch: int = 0, batch_in_epoch: int = 0) -> tuple[float, str] | None:
        batches = epoch * self.batches_per_epoch + batch_in_epoch
        if self.first is None:
            self.first = (step, batches, elapsed)
        rules = []
        spent = elapsed - self.first[2]
        if step > self.first[0] and spent > 0:
            rules.append(((self.max_steps - step) * spent / (step - self.first[0]), "max steps"))
        if self.epoch_batches and batches > self.first[1] and spent > 0:
            rules.append(((self.epoch_batches - batches) * spent / (batches - self.first[1]), "max epochs"))
        if self.max_time:
            rules.append((self.max_time - elapsed, "max time"))
        return min(rules) if rules else None


class LiveDisplay:
    """The dashboard: progress with a working ETA, loss / learning-rate / validation-BLEU sparklines,
    tokens/s, the latest samples and the cross-attention map of one validation sentence."""

    def __init__(self, console: Console, max_steps: int, start_step: int, max_time: float = 0.0,
                 max_epochs: int = 0, batches_per_epoch: int = 0) -> None:
        self.console = console
        self.eta = Eta(max_steps, max_time, max_epochs, batches_per_epoch)
        self.eta_text = "ETA -:--:--"
        self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[eta]}"), console=console)
        self.task = self.progress.add_task("steps", total=max_steps, completed=start_step, eta=self.eta_text)
        self.train: dict = {}
        self.eval: dict = {}
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.bleus: list[float] = []
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LiveDisplay":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def update(self, event: dict) -> None:
        if event["event"] == "train":
            self.train = event
            self.losses.append(event["loss"])
            self.lrs.append(event["lr"])
            eta = self.eta.update(event["step"], event.get("elapsed", 0.0), event.get("epoch", 0),
                                  event.get("batch_in_epoch", 0))
            if eta is not None:
                self.eta_text = f"ETA {clock(eta[0])} ({eta[1]})"
        elif event["event"] == "eval":
            self.eval = event
            self.bleus.append(event["bleu"])
        else:  # after the last step: a line above the view
            self.live.console.print(event_line(event, 0), markup=False, highlight=False)
            return
        self.progress.update(self.task, completed=event["step"], eta=self.eta_text)
        self.live.update(self._render())

    def _render(self) -> Group:
        t, e = self.train, self.eval
        table = Table.grid(padding=(0, 2))
        for _ in range(3):
            table.add_column()
        table.add_row("epoch / elapsed", f"{t.get('epoch', 0) + 1} / {clock(t.get('elapsed', 0))}",
                      f"{t['tokens_per_s']:,.0f} tokens/s" if t else "")
        table.add_row("loss", f"{t['loss']:.3f}" if t else "-", sparkline(self.losses))
        table.add_row("learning rate", f"{t['lr']:.2e}" if t else "-", sparkline(self.lrs))
        table.add_row("val BLEU", f"{e['bleu']:.2f}" if e else "-", sparkline(self.bleus))
        if e:
            table.add_row("val chrF / loss", f"{e['chrf']:.2f} / {e['loss']:.3f}", f"best step {e.get('best_step', '-')}")
        parts = [self.progress, table]
        for src, _, hyp in e.get("samples", [])[:2]:
            parts.append(f"[dim]{src}[/] → {hyp}")
        if e.get("attention"):
            parts.append(attention_map(e["attention"], e["step"]))
        return Group(*parts)


def attention_map(a: dict, step: int, max_tokens: int = 12) -> Table:
    """The validation sentence's cross-attention as a small coloured table (output rows, source columns)."""
    from cli.render import AttentionGrid, attention_table

    rows, cols = a["out"][:max_tokens], a["src"][:max_tokens]
    values = [row[:max_tokens] for row in a["weights"][:max_tokens]]
    return attention_table(AttentionGrid(f"cross-attention at step {step} (last layer, mean of heads)",
                                         rows, cols, values))


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
        self.err.print(f"[bold]{'resuming' if start.step else 'training'}[/] preset {start.preset} on {start.device}, "
                       f"{start.parameters:,} parameters, from step {start.step}; run directory {start.run_dir}")
        if start.init_from is not None and not start.step:
            self.err.print(f"starting from the weights of {start.init_from}", markup=False, highlight=False)
        self.err.print(config_summary(start.model_config, start.train_config), markup=False, highlight=False)
        self.err.print(f"(the whole configuration: {start.run_dir / 'config.json'})", style="dim", highlight=False)
        max_steps = start.train_config.max_steps
        cfg = start.train_config
        self.display = (LiveDisplay(self.out, max_steps, start.step, cfg.max_time, cfg.max_epochs,
                                    start.batches_per_epoch)
                        if self.out.is_terminal else PlainDisplay(self.out, max_steps))
        self.display.__enter__()

    def update(self, event: dict) -> None:
        if self.display is not None:
            self.display.update(event)

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            self.display.__exit__(*exc)


def summary_table(state, run_dir: str, best: dict | None, tokens_per_s: float, model_note: str,
                  search=None) -> Table:
    """The table after a run; search: the length penalty it chose (training.TrainResult.search), if any."""
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
    if search is not None:
        tried = ", ".join(f"{a:g}: {b:.2f}" for a, b in search.bleu.items())
        table.add_row("length penalty", f"{search.length_penalty:g}, translate's default for this run (search.json); "
                      f"validation BLEU, beam {search.beam_size}, by length penalty: {tried}")
    return table
