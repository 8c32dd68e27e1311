"""explain's sections as rich renderables (panels of tables); builders only, they never print."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.render import AttentionGrid, fit_tables, side_by_side


def sections(e, width: int) -> list[RenderableType]:
    """Every section of an Explanation, in the lecture's order."""
    out = [embeddings(e), positions(e), attention(e, width), masked(e, width), cross(e), residual(e),
           output(e), parallel(e)]
    if e.gradients is not None:
        out.append(gradients(e))
    if e.beam is not None:
        out.append(beam(e))
    return out


def numbers(title: str, labels: list[str], rows: list[list[float]], first: str = "token",
            fmt: str = "{:+.3f}") -> Table:
    """A token-by-dimension table: one row per label, columns d0, d1, ..."""
    table = Table(title=title, title_justify="left", pad_edge=False, padding=(0, 1))
    table.add_column(first, style="bold", no_wrap=True)
    for j in range(len(rows[0]) if rows else 0):
        table.add_column(f"d{j}", justify="right")
    for label, row in zip(labels, rows):
        table.add_row(label, *(fmt.format(v) for v in row))
    return table


def panel(number: int, title: str, *parts: RenderableType) -> Panel:
    return Panel(Group(*parts), title=f"[bold]{number} · {title}", title_align="left")


def embeddings(e) -> Panel:
    emb = e.embeddings
    labels = [f"{t} ({i})" for t, i in zip(emb.tokens, emb.ids)]
    return panel(1, "tokens, ids and the embedding",
                 Text(f"{e.source!r} → {len(emb.tokens)} subword tokens (with </s>); each id picks one row of "
                      f"the {e.d_model}-wide embedding table, multiplied by √d_model = √{e.d_model} = "
                      f"{emb.scale:.4g}."),
                 side_by_side([numbers("embedding rows (first dimensions)", labels, emb.raw),
                               numbers(f"× {emb.scale:.4g}", labels, emb.scaled)]))


def positions(e) -> Panel:
    p, c = e.positions, e.positions.cell
    labels = [f"{pos}: {t}" for pos, t in enumerate(e.embeddings.tokens)]
    return panel(2, "sinusoidal positional encoding",
                 Text("PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))"),
                 Text(f"worked: PE({c['pos']}, {c['dimension']}) = sin({c['pos']} / 10000^({c['dimension']}/"
                      f"{c['d_model']})) = sin({c['angle']:.4f}) = {c['value']:.4f}   (the model's table: {c['table']:.4f})"),
                 numbers("PE rows", labels, p.rows, first="pos"),
                 Text(f"every value lies in [{p.low:.3f}, {p.high:.3f}] ⊂ [-1, 1], the scale of the embedding "
                      "entries, and the waves repeat, so any length has a code. Added to the scaled embedding:"),
                 numbers("embedding × √d_model + PE: what encoder layer 1 reads", labels, p.summed))


def grid(title: str, rows_tok: list[str], cols_tok: list[str], values, width: int, scores: bool = False):
    return fit_tables(AttentionGrid(title, rows_tok, cols_tok, values, scores), width)


def attention(e, width: int) -> Panel:
    a, tok = e.attention, e.embeddings.tokens
    w = a.worked
    heads = Table(title="all heads: the key each token attends to most", title_justify="left", pad_edge=False)
    heads.add_column("head", justify="right")
    for t in tok:
        heads.add_column(t, no_wrap=True)
    for h, top in enumerate(a.heads_top):
        heads.add_row(str(h + 1), *(tok[j] for j in top), style="bold" if h == a.head else "")
    return panel(3, f"self-attention: encoder layer {a.layer + 1}, head {a.head + 1} of {e.n_heads}",
                 side_by_side([numbers("Q = x W^Q (this head)", tok, a.q), numbers("K = x W^K", tok, a.k),
                               numbers("V = x W^V", tok, a.v)]),
                 Text(f"worked: q_{w['query']}·k_{w['key']} ({tok[w['query']]} · {tok[w['key']]}) = {w['dot']:.3f}; "
                      f"÷ √d_k = √{a.d_k} = {w['sqrt_d_k']:.3f} → {w['score']:.3f}"),
                 *grid("scores QK^T / √d_k", tok, tok, a.scores, width, scores=True),
                 *grid("softmax(scores): each row sums to 1", tok, tok, a.weights, width),
                 numbers("output = weights · V (this head)", tok, a.output), heads,
                 Text(f"Concat(head_1 … head_{e.n_heads}) is {e.n_heads} × {a.d_k} = {a.concat_width} wide; "
                      "× W^O (+ b) gives the sub-layer's output:"),
                 numbers("MultiHead(Q, K, V) = Concat(heads) W^O", tok, a.projected))


def masked(e, width: int) -> Panel:
    m = e.masked
    return panel(4, f"masked decoder self-attention: layer {e.attention.layer + 1}, head {e.attention.head + 1}",
                 Text("the translation so far attends only to itself and the past: the future is set to -inf "
                      "before the softmax and becomes exactly 0 after it."),
                 *grid("scores (−inf above the diagonal)", m.tokens, m.tokens, m.scores, width, scores=True),
                 *grid("weights (0 above the diagonal)", m.tokens, m.tokens, m.weights, width))


def cross(e) -> Panel:
    c = e.cross
    table = Table(title="each output token looks at", title_justify="left", pad_edge=False)
    for name, justify in (("output", "left"), ("source token", "left"), ("weight", "right")):
        table.add_column(name, justify=justify)
    for out, (j, w) in zip(c.out_tokens, c.top):
        table.add_row(out, c.src_tokens[j], f"{w:.2f}")
    return panel(5, f"cross-attention: decoder layer {e.attention.layer + 1}, head {e.attention.head + 1}",
                 Text("queries from the decoder, keys and values from the last encoder layer's output."), table)


def residual(e) -> Panel:
    r = e.residual
    table = Table(title="per token, over d_model", title_justify="left", pad_edge=False)
    closed = "ReLU zeros in FFN" if r.activation == "relu" else "FFN inputs < 0"
    for name in ("token", "mean before", "var before", "mean after", "var after", closed):
        table.add_column(name, justify="left" if name == "token" else "right")
    for s, z in zip(r.steps, r.negative_share):
        table.add_row(s.token, f"{s.mean_before:+.3f}", f"{s.var_before:.3f}", f"{s.mean_after:+.3f}",
                      f"{s.var_after:.3f}", f"{z:.0%}")
    where = "LayerNorm(x + Sublayer(x))" if r.norm == "post" else "x + Sublayer(LayerNorm(x))"
    return panel(6, f"residual connection and layer normalisation: encoder layer {e.attention.layer + 1}",
                 Text(f"{where}; y = (x − E[x]) / √(Var[x] + ε) · γ + β with ε = {r.eps:g}. The residual path "
                      "carries x (and its gradient) past the sub-layer unchanged."),
                 table, numbers("γ and β (first dimensions)", ["γ", "β"], [r.gamma, r.beta], first=""),
                 Text(f"feed-forward: {ACTIVATION_TEXT[r.activation]} with d_ff = {r.d_ff}; the last column is the "
                      f"share of its units {CLOSED_TEXT[r.activation]}."))


ACTIVATION_TEXT = {"relu": "max(0, x W_1 + b_1) W_2 + b_2 (ReLU, the paper's)",
                   "swish": "swish(x W_1 + b_1) W_2 + b_2, swish(z) = z · sigmoid(z)",
                   "gelu": "GELU(x W_1 + b_1) W_2 + b_2, GELU(z) = z · Φ(z)"}
CLOSED_TEXT = {"relu": "the ReLU set to zero",
               "swish": "with a negative input, which swish turns into small negative values (at least −0.28)",
               "gelu": "with a negative input, which GELU turns into small negative values (at least −0.17)"}


def output(e) -> Panel:
    table = Table(title="the top candidates at each step", title_justify="left", pad_edge=False)
    table.add_column("step", justify="right")
    table.add_column("chosen")
    table.add_column("candidates (probability)")
    for t, step in enumerate(e.output):
        table.add_row(str(t + 1), step.produced, "  ".join(f"{tok} {p:.2f}" for tok, p in step.candidates))
    return panel(7, "the output: linear + softmax over the vocabulary", Text(f"→ {e.translation}"), table)


def parallel(e) -> Panel:
    p = e.parallel
    ratio = p.step_by_step_ms / p.teacher_forced_ms if p.teacher_forced_ms else float("nan")
    return panel(8, "why attention trains in parallel",
                 Text(f"training (teacher forcing): all {p.positions} target positions in one decoder pass: "
                      f"{p.teacher_forced_ms:.2f} ms\ngeneration: one decoder call per position, each waiting for "
                      f"the previous token: {p.step_by_step_ms:.2f} ms ({ratio:.1f}x). An RNN or LSTM must go "
                      "step by step even in training; attention sees every position at once."))


def gradients(e) -> Panel:
    g = e.gradients
    table = Table(title="‖∂loss/∂(layer input)‖ for this sentence", title_justify="left", pad_edge=False)
    for name in ("layer", "with residual", "without residual"):
        table.add_column(name, justify="right")
    for kind in ("encoder", "decoder"):
        for i, (a, b) in enumerate(zip(g["with_residual"][kind], g["without_residual"][kind])):
            table.add_row(f"{kind} {i + 1}", f"{a:.3e}", f"{b:.3e}")
    return panel(9, "the residual connection keeps the gradient alive", table,
                 Text("without residual: the same weights with every \"x +\" removed (computed on the fly)."))


STATUS = {"kept": "green", "finished": "bold blue", "pruned": "dim"}


def beam(e) -> Panel:
    b = e.beam
    parts: list[RenderableType] = [Text(
        f"beam size {b.beam_size}: at each step every kept prefix is extended by every token; the 2 x "
        f"{b.beam_size} best extensions by sum of log p are looked at: the first {b.beam_size} that do not end "
        f"go on, one among the top {b.beam_size} that ends with </s> is finished; the search stops when "
        f"{b.beam_size} have finished.")]
    for step in b.steps:
        table = Table(title=f"step {step.step}", title_justify="left", pad_edge=False)
        for name, justify in (("prefix", "left"), ("+ token", "left"), ("log p", "right"), ("sum", "right"),
                              ("", "left")):
            table.add_column(name, justify=justify)
        for prefix, token, lp, total, status in step.candidates:
            table.add_row(prefix, token, f"{lp:.3f}", f"{total:.3f}", status, style=STATUS[status])
        parts.append(table)
    final = Table(title=f"finished hypotheses, ranked by Σ log p / lp(|Y|), lp = ((5 + |Y|) / 6)^{b.alpha:g}",
                  title_justify="left", pad_edge=False)
    for name in ("hypothesis", "Σ log p", "|Y|", "lp", "score"):
        final.add_column(name, justify="left" if name == "hypothesis" else "right")
    for i, f in enumerate(b.finished):
        final.add_row(f.text, f"{f.logprob:.3f}", str(f.length), f"{f.lp:.3f}", f"{f.score:.3f}",
                      style="bold" if i == 0 else "")
    w = b.finished[0]
    parts += [final, Text(f"winner: {w.text}   {w.logprob:.3f} / ((5 + {w.length}) / 6)^{b.alpha:g} = "
                          f"{w.logprob:.3f} / {w.lp:.3f} = {w.score:.3f}", style="bold")]
    return panel(10, "beam search, step by step", *parts)
