"""The lecture on the user's own model: one sentence walked through the Transformer in the lecture's
order, with the model's real numbers (what `transformer-cli explain` shows).

Everything here is computed from the loaded model's parameters by running its own modules one at a
time; nothing is stashed inside the model. Sections are plain dataclasses of numbers and tokens, so
the command renders them and `--format json` writes them as they are.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from data.tokenizer import BOS_ID, EOS_ID, decode
from transformer.beam import StepTrace, beam_search
from transformer.decoding import length_penalty
from transformer.layers import Residual
from transformer.model import Transformer

from transformer_cli.errors import RunError, named
from transformer_cli.translator import NEVER_OUTPUT, SearchOptions, Translator

Rows = list[list[float]]


@dataclass(frozen=True)
class Embeddings:
    """Section 1: the source tokens' embedding rows, and the same rows times sqrt(d_model)."""

    tokens: list[str]  # source subwords + </s>
    ids: list[int]
    scale: float  # sqrt(d_model)
    raw: Rows  # embedding rows, first `dims` dimensions
    scaled: Rows  # raw * scale


@dataclass(frozen=True)
class Positions:
    """Section 2: the sinusoidal positional encoding, one cell worked out, and embeddings + positions."""

    rows: Rows  # PE(pos, :dims) for pos = 0 .. len-1
    cell: dict  # one value worked out: pos, i, dimension, angle, function, value
    low: float  # smallest and largest value of the whole table for these positions (within -1..1)
    high: float
    summed: Rows  # embedding * sqrt(d_model) + PE: what the first layer reads


@dataclass(frozen=True)
class SelfAttention:
    """Sections 3-4: Q, K, V of one encoder head, a worked score, softmax(QK^T/sqrt(d_k)) V, and all heads through W^O."""

    layer: int  # 0-based
    head: int
    d_k: int
    q: Rows  # (len, dims) this head's queries
    k: Rows
    v: Rows
    worked: dict  # one score: query i, key j, q.k, sqrt(d_k), the score
    scores: Rows  # (len, len) QK^T / sqrt(d_k)
    weights: Rows  # (len, len) softmax of each row
    output: Rows  # (len, dims) weights @ V
    heads_top: list[list[int]]  # [head][query] = key position it attends to most
    concat_width: int  # heads * d_k = d_model
    projected: Rows  # (len, dims) Concat(heads) W^O + b: the sub-layer's output


@dataclass(frozen=True)
class MaskedAttention:
    """Section 5: the decoder's masked self-attention (the future at -inf, its weights 0)."""

    tokens: list[str]  # decoder inputs: <s> + output subwords
    scores: list[list[float | None]]  # (len, len), None = -inf (the future)
    weights: Rows  # exactly 0 above the diagonal


@dataclass(frozen=True)
class CrossAttention:
    """Section 6: cross-attention, each output token's weights over the source."""

    out_tokens: list[str]  # what each decoder position produced: output subwords + </s>
    src_tokens: list[str]
    top: list[tuple[int, float]]  # per output token: the source position it weighs most, and the weight
    weights: Rows  # (out_len, src_len) this layer and head


@dataclass(frozen=True)
class NormStep:
    """Mean and variance of one token's vector before and after the layer normalisation."""

    token: str
    mean_before: float  # of x + Sublayer(x) (post-norm) over d_model
    var_before: float
    mean_after: float
    var_after: float


@dataclass(frozen=True)
class ResidualNorm:
    """Section 7: residual + LayerNorm around a sub-layer, and the feed-forward's closed units."""

    norm: str  # post | pre
    steps: list[NormStep]
    gamma: list[float]  # first `dims` values
    beta: list[float]
    eps: float
    negative_share: list[float]  # per token: share of the feed-forward's d_ff units whose input to the
    # activation is < 0 (ReLU sets them to 0; swish and GELU to small negative values)
    d_ff: int
    activation: str = "relu"  # the model's feed-forward activation (ModelConfig.activation)


@dataclass(frozen=True)
class OutputStep:
    """Section 8 (one step): the produced token and the top candidates of the softmax."""

    produced: str  # the token the translation has at this step
    candidates: list[tuple[str, float]]  # the top candidates and their probabilities


@dataclass(frozen=True)
class Parallel:
    """Teacher forcing against step-by-step decoding: one pass over every position versus one per position."""

    positions: int  # target positions
    teacher_forced_ms: float  # one decoder pass over every position
    step_by_step_ms: float  # one decoder call per position (with the key/value cache)


@dataclass(frozen=True)
class BeamStep:
    """Section 10 (one step): every candidate of the beam search with its log-probabilities and fate."""

    step: int  # 1-based output position the candidates end at
    candidates: list[tuple[str, str, float, float, str]]  # (prefix, + token, log p(token), sum of log p, status)


@dataclass(frozen=True)
class Finished:
    """A finished hypothesis of the beam search with its length-penalty arithmetic."""

    text: str
    ids: list[int]  # the output tokens, </s> last when it ended
    length: int  # |Y|, </s> counted
    logprob: float  # sum of log p
    lp: float  # ((5 + |Y|) / 6) ** alpha
    score: float  # logprob / lp: what ranks the hypotheses


@dataclass(frozen=True)
class BeamTrace:
    """Section 10: the beam search step by step and its finished hypotheses, best first."""

    beam_size: int
    alpha: float
    steps: list[BeamStep]  # status: kept (goes on), finished (ended), pruned (dropped)
    finished: list[Finished]  # best first; the first is the translation


@dataclass(frozen=True)
class Explanation:
    """Every section of the lecture for one sentence, as plain numbers and tokens."""

    source: str
    translation: str
    d_model: int
    n_heads: int
    layers: tuple[int, int]  # encoder, decoder
    embeddings: Embeddings
    positions: Positions
    attention: SelfAttention
    masked: MaskedAttention
    cross: CrossAttention
    residual: ResidualNorm
    output: list[OutputStep]
    parallel: Parallel
    gradients: dict | None = None  # see layer_gradients()
    beam: BeamTrace | None = None  # --beam-size N > 1
    truncated: bool = False  # the sentence was longer than the model's positions and was cut


def rows(t: torch.Tensor, dims: int | None = None) -> Rows:
    """A tensor as nested lists of float64 (its first `dims` values of the last axis when given)."""
    t = t.detach().double()
    return (t[..., :dims] if dims else t).tolist()


@torch.no_grad()
def explain(translator: Translator, text: str, layer: int = 0, head: int = 0, dims: int = 6,
            beam_size: int = 1, gradients: bool = False, top: int = 5) -> Explanation:
    """Walk `text` through the model: layer and head (0-based) choose the maps shown in detail."""
    model = translator.model
    c = model.config
    if not 0 <= layer < min(c.n_encoder_layers, c.n_decoder_layers):
        raise RunError(f"{named('layer')} {layer} does not exist: the model has layers 0-"
                       f"{min(c.n_encoder_layers, c.n_decoder_layers) - 1} (0-based)", "layer")
    if not 0 <= head < c.n_heads:
        raise RunError(f"{named('head')} {head} does not exist: the model has heads 0-{c.n_heads - 1} (0-based)",
                       "head")
    model.eval()
    encoded = translator.encode([text.strip()])
    src = translator.tensor(encoded.ids)  # (1, src_len + 1): ids </s>
    search = translator.options(beam_size=beam_size, n_best=1)  # the run's penalty, as translate's
    beam = _beam_trace(translator, src, search) if beam_size > 1 else None
    if beam is not None:  # the translation the sections below follow: the search's winner
        produced = beam.finished[0].ids
    else:
        produced = translator.search(encoded.ids, SearchOptions(beam_size=1))[0][0].tokens  # </s> last if it ended
    forced = translator.teacher_force(encoded.ids[0], produced, text.strip())
    tgt_in = torch.tensor([[BOS_ID] + produced[:-1]], device=translator.device)  # what the decoder read
    x = _encoder_input(model, src, layer)
    attention, sublayer_out = _self_attention(model, x, layer, head, dims)
    decoder, cross = forced.maps.decoder[layer], forced.maps.cross[layer]
    return Explanation(
        source=text.strip(), translation=forced.translation, d_model=c.d_model, n_heads=c.n_heads,
        layers=(c.n_encoder_layers, c.n_decoder_layers),
        embeddings=_embeddings(model, src, forced.src_tokens, dims), positions=_positions(model, src, dims),
        attention=attention,
        masked=_masked(decoder.scores[0, head], decoder.weights[0, head], forced.tgt_in_tokens),
        cross=_cross(cross.weights[0, head], forced.out_tokens, forced.src_tokens),
        residual=_residual(model, x, sublayer_out, layer, forced.src_tokens, dims),
        output=_output(forced.log_probs, forced.out_tokens, translator, top),
        parallel=_parallel(model, src, tgt_in),
        gradients=layer_gradients(model, src, tgt_in, torch.tensor([produced], device=src.device)) if gradients else None,
        beam=beam, truncated=encoded.truncated[0],
    )


def _beam_trace(translator: Translator, src: torch.Tensor, o: SearchOptions) -> BeamTrace:
    """The search translate runs (same options), every step's candidates recorded."""
    steps: list[StepTrace] = []
    nbest = beam_search(translator.model, src, BOS_ID, EOS_ID, o.beam_size, o.beam_size, o.length_penalty,
                        o.max_len_a, o.max_len_b, trace=steps.append, length_style=o.length_style,
                        banned=NEVER_OUTPUT)[0]
    piece = translator.toks.tgt.id_to_token

    def text(ids: list[int]) -> str:
        return " ".join(piece(i) if i != EOS_ID else "</s>" for i in ids) or "<s>"

    trace = [BeamStep(s.step + 1, [(text(s.prefixes[0][b]), piece(t) if t != EOS_ID else "</s>", lp, total, status)
                                   for b, t, lp, total, status in s.candidates[0]]) for s in steps]
    finished = [Finished(decode(translator.toks.tgt, h.without_eos(EOS_ID)), h.tokens, len(h.tokens),
                         sum(h.token_logprobs), length_penalty(len(h.tokens), o.length_penalty, o.length_style),
                         h.score)
                for h in nbest]
    return BeamTrace(o.beam_size, o.length_penalty, trace, finished)


def _embeddings(model: Transformer, src: torch.Tensor, tokens: list[str], dims: int) -> Embeddings:
    raw = model.src_embed.weight[src[0]]  # (len, d_model)
    scale = model.src_embed.scale
    return Embeddings(tokens=tokens, ids=src[0].tolist(), scale=scale, raw=rows(raw, dims),
                      scaled=rows(model.src_embed(src)[0], dims))


def _positions(model: Transformer, src: torch.Tensor, dims: int) -> Positions:
    length, d = src.size(1), model.config.d_model
    pe = model.positions.pe[:length]  # (len, d_model)
    pos, i = min(1, length - 1), 1  # PE(pos, 2i) for pos 1, i 1: dimension 2
    angle = pos / 10000 ** (2 * i / d)
    cell = {"pos": pos, "i": i, "dimension": 2 * i, "d_model": d, "angle": angle, "function": "sin",
            "value": math.sin(angle), "table": float(pe[pos, 2 * i])}
    summed = model.src_embed(src)[0] + pe  # what dropout (off at inference) passes to layer 1
    return Positions(rows=rows(pe, dims), cell=cell, low=float(pe.min()), high=float(pe.max()),
                     summed=rows(summed, dims))


def _encoder_input(model: Transformer, src: torch.Tensor, layer: int) -> torch.Tensor:
    """The input of encoder layer `layer` (1, len, d_model), run layer by layer (one sentence: no padding)."""
    mask = (src != model.config.pad_id)[:, None, None, :]
    x = model.positions(model.src_embed(src))
    for enc in model.encoder.layers[:layer]:
        x, _ = enc(x, mask)
    return x


def _self_attention(model: Transformer, x: torch.Tensor, layer: int, head: int, dims: int
                    ) -> tuple[SelfAttention, torch.Tensor]:
    """The section for encoder layer `layer` whose input is x, and the sub-layer's output (1, len, d_model)."""
    block = model.encoder.layers[layer]
    attn = block.self_attn
    h = block.attn_residual.input(x)
    q, k, v = (attn.split_heads(p(h))[0] for p in (attn.q_proj, attn.k_proj, attn.v_proj))  # (heads, len, d_k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.d_k)  # (heads, len, len); no padding in one sentence
    weights = torch.softmax(scores, dim=-1)
    heads_out = weights @ v  # (heads, len, d_k)
    concat = heads_out.transpose(0, 1).reshape(x.size(1), -1)  # (len, heads * d_k)
    projected = attn.out_proj(concat)  # Concat(head_1..head_h) W^O + b
    i, j = 0, min(1, x.size(1) - 1)
    dot = float(q[head, i] @ k[head, j])
    worked = {"query": i, "key": j, "dot": dot, "sqrt_d_k": math.sqrt(attn.d_k), "score": dot / math.sqrt(attn.d_k)}
    return SelfAttention(layer=layer, head=head, d_k=attn.d_k, q=rows(q[head], dims), k=rows(k[head], dims),
                         v=rows(v[head], dims), worked=worked, scores=rows(scores[head]), weights=rows(weights[head]),
                         output=rows(heads_out[head], dims), heads_top=weights.argmax(-1).tolist(),
                         concat_width=concat.size(1), projected=rows(projected, dims)), projected[None]


def _masked(scores: torch.Tensor, weights: torch.Tensor, tokens: list[str]) -> MaskedAttention:
    return MaskedAttention(tokens=tokens, weights=rows(weights),
                           scores=[[None if math.isinf(s) else s for s in row] for row in rows(scores)])


def _cross(weights: torch.Tensor, out_tokens: list[str], src_tokens: list[str]) -> CrossAttention:
    best = weights.max(dim=-1)
    return CrossAttention(out_tokens=out_tokens, src_tokens=src_tokens, weights=rows(weights),
                          top=list(zip(best.indices.tolist(), best.values.double().tolist())))


def _residual(model: Transformer, x: torch.Tensor, out: torch.Tensor, layer: int, tokens: list[str],
              dims: int) -> ResidualNorm:
    """The residual + LayerNorm around encoder layer `layer`'s attention (input x, sub-layer output
    `out`), and its feed-forward."""
    block = model.encoder.layers[layer]
    res = block.attn_residual
    before = x + out if not res.pre_norm else x  # post-norm normalises x + Sublayer(x); pre-norm normalises x
    after = res.norm(before)
    steps = [NormStep(t, float(b.mean()), float(b.var(unbiased=False)), float(a.mean()), float(a.var(unbiased=False)))
             for t, b, a in zip(tokens, before[0].double(), after[0].double())]
    ff_in = block.ff_residual.input(res.output(x, out))
    pre_activation = block.feed_forward.w_1(ff_in)[0]  # (len, d_ff): x W_1 + b_1
    return ResidualNorm(norm="pre" if res.pre_norm else "post", steps=steps, gamma=rows(res.norm.gamma, dims),
                        beta=rows(res.norm.beta, dims), eps=res.norm.eps,
                        negative_share=(pre_activation < 0).double().mean(-1).tolist(), d_ff=pre_activation.size(-1),
                        activation=model.config.activation)


def _output(log_probs: torch.Tensor, out_tokens: list[str], translator: Translator, top: int) -> list[OutputStep]:
    probs = log_probs.exp()  # (out_len, vocab): step t's distribution
    best = probs.topk(top, dim=-1)
    tok = translator.toks.tgt.id_to_token
    return [OutputStep(produced, [(tok(i), p) for i, p in zip(ids, ps)])
            for produced, ids, ps in zip(out_tokens, best.indices.tolist(), best.values.tolist())]


def _parallel(model: Transformer, src: torch.Tensor, tgt_in: torch.Tensor, repeats: int = 5) -> Parallel:
    """One teacher-forced decoder pass over all target positions against one decoder call per
    position (what generation must do), the same sentence, median of `repeats`."""
    cache, _ = model.encode(src)

    def forced():
        model.decode(tgt_in, copy.copy(cache))

    def stepwise():
        step_cache = copy.copy(cache)
        for t in range(tgt_in.size(1)):
            model.decode(tgt_in[:, t:t + 1], step_cache)

    def ms(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    return Parallel(positions=tgt_in.size(1), teacher_forced_ms=ms(forced), step_by_step_ms=ms(stepwise))


def layer_gradients(model: Transformer, src: torch.Tensor, tgt_in: torch.Tensor, target: torch.Tensor) -> dict:
    """The norm of the gradient of this sentence's loss (cross-entropy of `target`, the translation,
    teacher forced from tgt_in) at the input of every encoder and decoder layer, with the residual connections and
    without them (each sub-layer's output replacing x + output, the weights unchanged). First layer first."""
    with_res = _gradient_norms(model, src, tgt_in, target)
    residuals = [m for m in model.modules() if isinstance(m, Residual)]
    try:
        for module in residuals:  # the same weights with every "x +" removed, undone below
            module.output = _no_residual(module)
        without = _gradient_norms(model, src, tgt_in, target)
    finally:
        for module in residuals:
            del module.output  # the class's own output() again
    return {"with_residual": with_res, "without_residual": without}


def _no_residual(res: Residual):
    def output(x: torch.Tensor, sublayer_out: torch.Tensor) -> torch.Tensor:
        y = res.dropout(sublayer_out)  # no "x +": the path the gradient loses without the residual
        return y if res.pre_norm else res.norm(y)
    return output


def _gradient_norms(model: Transformer, src: torch.Tensor, tgt_in: torch.Tensor, target: torch.Tensor) -> dict:
    inputs: dict[str, list[torch.Tensor]] = {"encoder": [], "decoder": []}

    def keep(kind):
        def hook(_module, args):
            args[0].retain_grad()
            inputs[kind].append(args[0])
        return hook

    handles = [layer.register_forward_pre_hook(keep(kind))
               for kind, stack in (("encoder", model.encoder.layers), ("decoder", model.decoder.layers))
               for layer in stack]
    try:
        with torch.enable_grad():
            logits, _ = model(src, tgt_in)
            F.cross_entropy(logits[0], target[0]).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {kind: [float(t.grad.norm()) for t in ts] for kind, ts in inputs.items()}
