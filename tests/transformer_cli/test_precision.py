"""bf16 and int8 translation against fp32 on a small trained model: mostly the same outputs, the same
BLEU within a bound. (The exit code alone would pass a path that decodes garbage.)"""

import pytest
import torch

from transformer_cli import SearchOptions, TrainRequest, load_run, train

pytestmark = pytest.mark.slow  # a model learns the demo corpus first

SENTENCES = 120  # validation sentences translated per precision
SAME_SHARE = 0.8  # at least this share of outputs identical to fp32's (about 0.97 measured)
BLEU_GAP = 3.0  # bf16 BLEU within this of fp32's (about 0.5 measured)


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """A one-layer model trained until it translates the demo corpus (about 15 s on one thread)."""
    out = tmp_path_factory.mktemp("precision") / "run"
    train(TrainRequest(out=out, data=demo_data, preset="tiny",
                       model={"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 1,
                              "max_len": 64},
                       training={"max_steps": 300, "eval_every": 300, "eval_samples": 8, "threads": 1,
                                 "max_tokens": 800, "warmup": 50}))
    return out


@pytest.fixture(scope="module")
def validation(demo_data):
    from datasets import load_from_disk

    split = load_from_disk(str(demo_data / "dataset" / "validation"))
    return list(split["src"][:SENTENCES]), list(split["tgt"][:SENTENCES])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("beam_size", [1, 5])
def test_lower_precision_translates_like_fp32(trained, validation, beam_size, precision):
    from transformer.packed import PackedLinear
    from transformer_cli.scoring import score

    if precision == "int8" and not torch.backends.mkldnn.is_available():
        pytest.skip("int8 needs oneDNN")
    sources, references = validation
    outputs = {}
    for p in ("fp32", precision):
        translator = load_run(trained, precision=p)
        dtype = {w.dtype for w in translator.model.parameters()}
        assert dtype == {torch.bfloat16 if p == "bf16" else torch.float32}  # int8 keeps the float32 weights
        layers = [m for m in translator.model.modules() if isinstance(m, PackedLinear)]
        assert all(m.int8 == (p == "int8") for m in layers)
        outputs[p] = [r.text for r in translator.translate(sources, SearchOptions(beam_size=beam_size))]
    same = sum(a == b for a, b in zip(outputs["fp32"], outputs[precision])) / len(sources)
    scores = {p: score(hyps, references).bleu for p, hyps in outputs.items()}
    assert scores["fp32"] > 30, "the model learnt something, so the comparison means something"
    assert same >= SAME_SHARE, (same, scores)
    assert abs(scores[precision] - scores["fp32"]) <= BLEU_GAP, scores
