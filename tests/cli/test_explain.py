"""explain: every section's numbers against an independent computation from the model's parameters."""

import json
import math

import pytest
import torch

from data.tokenizer import encode_batch
from transformer_cli import load_run
from transformer_cli.explain import explain

SENTENCE = "I am a student."


def T(rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.fixture(scope="module", params=["trained", "imported"])
def run(request):
    """explain on a run trained here (ReLU) and on an imported OPUS-MT model (swish, output bias):
    every section is checked against the parameters of each."""
    translator = load_run(request.getfixturevalue("model_dir" if request.param == "trained" else "imported_run"))
    return translator, explain(translator, SENTENCE, layer=0, head=1, dims=4, gradients=True)


def params(model, prefix):
    return {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def encoder_input(model, ids):
    """Layer 1's input from the raw parameters: E[ids] * sqrt(d) + PE (dropout is off)."""
    d = model.config.d_model
    pos = torch.arange(len(ids), dtype=torch.float64)[:, None]
    i2 = torch.arange(0, d, 2, dtype=torch.float64)
    pe = torch.zeros(len(ids), d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos / 10000 ** (i2 / d)), torch.cos(pos / 10000 ** (i2 / d))
    return model.src_embed.weight.detach().double()[ids] * math.sqrt(d) + pe, pe


def test_embeddings_and_positions(run):
    translator, e = run
    model = translator.model
    ids = e.embeddings.ids
    assert ids[-1] == 3 and e.embeddings.tokens[-1] == "</s>"
    assert ids[:-1] == encode_batch(translator.toks.src, [SENTENCE])[0]
    raw = model.src_embed.weight.detach().double()[ids]
    assert e.embeddings.scale == pytest.approx(math.sqrt(model.config.d_model))
    torch.testing.assert_close(T(e.embeddings.raw), raw[:, :4])
    torch.testing.assert_close(T(e.embeddings.scaled), raw[:, :4] * e.embeddings.scale, rtol=1e-5, atol=1e-5)
    x, pe = encoder_input(model, ids)
    torch.testing.assert_close(T(e.positions.rows), pe[:, :4], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(T(e.positions.summed), x[:, :4], rtol=1e-5, atol=1e-5)
    c = e.positions.cell
    assert c["value"] == pytest.approx(math.sin(c["pos"] / 10000 ** (c["dimension"] / c["d_model"])))
    assert c["table"] == pytest.approx(c["value"], abs=1e-6)
    assert -1 <= e.positions.low <= e.positions.high <= 1


def test_self_attention_head_from_the_weights(run):
    translator, e = run
    model = translator.model
    a = e.attention
    x, _ = encoder_input(model, e.embeddings.ids)
    p = params(model, "encoder.layers.0.self_attn.")
    dk, h = a.d_k, a.head
    head = slice(h * dk, (h + 1) * dk)
    q, k, v = ((x @ p[f"{n}_proj.weight"].double().T + p[f"{n}_proj.bias"].double())[:, head] for n in "qkv")
    scores = q @ k.T / math.sqrt(dk)
    weights = torch.softmax(scores, -1)
    for name, expected in (("q", q[:, :4]), ("k", k[:, :4]), ("v", v[:, :4]), ("scores", scores),
                           ("weights", weights), ("output", (weights @ v)[:, :4])):
        torch.testing.assert_close(T(getattr(a, name)), expected, rtol=1e-4, atol=1e-4, msg=name)
    w = a.worked
    assert w["dot"] == pytest.approx(float(q[w["query"]] @ k[w["key"]]), rel=1e-4)
    assert w["score"] == pytest.approx(w["dot"] / math.sqrt(dk)) == pytest.approx(a.scores[w["query"]][w["key"]], rel=1e-6)
    assert all(sum(row) == pytest.approx(1.0) for row in a.weights)
    assert a.heads_top[h] == weights.argmax(-1).tolist()
    assert a.concat_width == model.config.d_model


def test_masked_scores_are_minus_infinity_and_weights_exactly_zero(run):
    _, e = run
    m = e.masked
    n = len(m.tokens)
    assert m.tokens[0] == "<s>" and n == len(e.cross.out_tokens)
    for i in range(n):
        for j in range(n):
            if j > i:
                assert m.scores[i][j] is None and m.weights[i][j] == 0.0
            else:
                assert m.scores[i][j] is not None
        assert sum(m.weights[i]) == pytest.approx(1.0)


def test_cross_attention_top_is_the_row_maximum(run):
    _, e = run
    c = e.cross
    assert len(c.top) == len(c.out_tokens) and len(c.weights[0]) == len(c.src_tokens)
    for (j, w), row in zip(c.top, c.weights):
        assert w == max(row) and row[j] == w


def attention_sublayer(model, x):
    """MultiHead(x, x, x) of encoder layer 1 from the raw parameters (no padding in one sentence)."""
    p = params(model, "encoder.layers.0.self_attn.")
    h, n = model.config.n_heads, x.size(0)
    q, k, v = ((x @ p[f"{m}_proj.weight"].double().T + p[f"{m}_proj.bias"].double()).view(n, h, -1).transpose(0, 1)
               for m in "qkv")
    heads = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.size(-1)), -1) @ v  # (heads, n, d_k)
    return heads.transpose(0, 1).reshape(n, -1) @ p["out_proj.weight"].double().T + p["out_proj.bias"].double()


def test_layer_norm_and_feed_forward_statistics(run):
    translator, e = run
    model = translator.model
    r = e.residual
    p = params(model, "encoder.layers.0.")
    x, _ = encoder_input(model, e.embeddings.ids)
    z = x + attention_sublayer(model, x)  # post-norm: LayerNorm(x + Sublayer(x))
    gamma, beta = p["attn_residual.norm.gamma"].double(), p["attn_residual.norm.beta"].double()
    y = (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + r.eps) * gamma + beta
    assert r.norm == "post" and r.gamma == pytest.approx(gamma[:4].tolist()) and r.beta == pytest.approx(beta[:4].tolist())
    got = T([[s.mean_before, s.var_before, s.mean_after, s.var_after] for s in r.steps])
    expected = torch.stack([z.mean(-1), z.var(-1, unbiased=False), y.mean(-1), y.var(-1, unbiased=False)], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    pre_activation = y @ p["feed_forward.w_1.weight"].double().T + p["feed_forward.w_1.bias"].double()
    torch.testing.assert_close(T(r.negative_share), (pre_activation < 0).double().mean(-1), rtol=0, atol=2 / r.d_ff)
    assert r.activation == model.config.activation


def test_output_candidates_are_the_teacher_forced_distribution(run):
    translator, e = run
    assert [s.produced for s in e.output] == e.cross.out_tokens
    for step in e.output:
        probs = [p for _, p in step.candidates]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert step.candidates[0][0] == step.produced  # greedy: the chosen token is the most probable


def test_parallel_pass_and_gradients(run):
    translator, e = run
    assert e.parallel.positions == len(e.masked.tokens)
    assert e.parallel.teacher_forced_ms > 0 and e.parallel.step_by_step_ms > 0
    g = e.gradients
    c = translator.model.config
    for key in ("with_residual", "without_residual"):
        assert len(g[key]["encoder"]) == c.n_encoder_layers and len(g[key]["decoder"]) == c.n_decoder_layers
    assert all(v > 0 for v in g["with_residual"]["encoder"])
    assert g["without_residual"]["encoder"] != pytest.approx(g["with_residual"]["encoder"])
    # independently: d loss / d (encoder layer 1 input) through the model's own encode/decode pieces
    from transformer.model import DecoderCache

    model = translator.model
    src = torch.tensor([e.embeddings.ids])
    produced = [translator.toks.tgt.token_to_id(t) for t in e.cross.out_tokens]
    tgt_in = torch.tensor([[2] + produced[:-1]])  # <s> is id 2
    x0 = model.positions(model.src_embed(src)).detach().requires_grad_()
    mask = (src != 0)[:, None, None, :]
    memory, _ = model.encoder(x0, mask)
    cache = DecoderCache([layer.cross_attn.project_kv(memory) for layer in model.decoder.layers], mask)
    logits, _, _ = model.decode(tgt_in, cache)
    torch.nn.functional.cross_entropy(logits[0], torch.tensor(produced)).backward()
    assert g["with_residual"]["encoder"][0] == pytest.approx(float(x0.grad.norm()), rel=1e-4)
    # the residual connections are back afterwards: explaining again gives the same gradients
    again = explain(translator, SENTENCE, gradients=True).gradients
    for kind in ("encoder", "decoder"):
        assert again["with_residual"][kind] == pytest.approx(g["with_residual"][kind])


def test_command_renders_every_section_and_json(cli, model_dir):
    result = cli("explain", "--model", model_dir, SENTENCE, "--gradients")
    assert result.exit_code == 0, result.stderr
    for n in range(1, 10):
        assert f"{n} · " in result.stdout
    data = json.loads(cli("explain", "--model", model_dir, SENTENCE, "--format", "json").stdout)
    assert data["source"] == SENTENCE and data["gradients"] is None
    assert set(data) >= {"embeddings", "positions", "attention", "masked", "cross", "residual", "output", "parallel"}
    # the rendered panels show the computed numbers (the same model, deterministic sections)
    worked, cell = data["attention"]["worked"], data["positions"]["cell"]
    text = result.stdout
    assert f"= {worked['dot']:.3f}; ÷ √d_k = √{data['attention']['d_k']}" in text and f"→ {worked['score']:.3f}" in text
    assert f"= {cell['value']:.4f}" in text and data["translation"].split()[0] in text
    assert "-inf" in text and f"{data['embeddings']['scale']:.4g}" in text


@pytest.mark.parametrize("args,message", [
    (["--layer", "9"], "--layer 9 does not exist"),
    (["--head", "0"], "--head"),
    (["--format", "xml"], "--format must be table or json"),
    (["--beam-size", "0"], "--beam-size"),
])
def test_errors_are_one_line(cli, model_dir, args, message):
    result = cli("explain", "--model", model_dir, SENTENCE, *args)
    assert result.exit_code != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_beam_trace_follows_the_search(model_dir):
    translator = load_run(model_dir, pack=False)
    e = explain(translator, SENTENCE, beam_size=3)
    b = e.beam
    from transformer_cli import SearchOptions

    assert e.translation == translator.translate([SENTENCE], SearchOptions(beam_size=3))[0].text
    assert b.finished[0].text == e.translation and len(b.finished) <= 3
    for f in b.finished:  # the length-penalty arithmetic shown
        assert f.lp == pytest.approx(((5 + f.length) / 6) ** b.alpha)
        assert f.score == pytest.approx(f.logprob / f.lp)
    assert [f.score for f in b.finished] == sorted((f.score for f in b.finished), reverse=True)
    for before, after in zip(b.steps, b.steps[1:]):
        kept = {(p, t) for p, t, _, _, status in before.candidates if status == "kept"}
        assert 1 <= len(kept) <= 3
        extended = {p for p, *_ in after.candidates}
        assert extended <= {f"{p} {t}" if p != "<s>" else t for p, t in kept}
        sums = {f"{p} {t}" if p != "<s>" else t: s for p, t, _, s, status in before.candidates if status == "kept"}
        for prefix, _, lp, total, _ in after.candidates:
            assert total == pytest.approx(sums[prefix] + lp, abs=1e-5)
    statuses = [c[4] for step in b.steps for c in step.candidates]
    assert statuses.count("finished") >= len(b.finished)  # the list is the best of all that finished


def test_missing_model_and_empty_sentence(cli, tmp_path):
    result = cli("explain", "--model", str(tmp_path / "nope"), SENTENCE)
    assert result.exit_code != 0 and "model directory not found" in result.stderr and "Traceback" not in result.stderr
    result = cli("explain", "--model", str(tmp_path), "   ")
    assert result.exit_code != 0 and "empty sentence" in result.stderr
