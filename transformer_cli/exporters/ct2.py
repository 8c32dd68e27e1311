"""Export to CTranslate2 with the engine's own converter API: a `Converter` whose `_load()` fills
CTranslate2's `TransformerSpec` from our weights (as its OpenNMT-py and fairseq converters do), so
`convert()` validates, quantizes and writes the model in the engine's format. Post-norm and
pre-norm, shared or separate vocabularies; our sinusoidal table is given to the engine as is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.tokenizer import SPECIALS
from transformer_cli.errors import RunError, named
from transformer_cli.exporters.common import finish, need, save_tokenizers


QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
                 "float32")  # CTranslate2's weight types (ctranslate2.specs.model_spec.ACCEPTED_MODEL_TYPES)


def check_ctranslate2(quantization: str | None) -> None:
    """Before the model is loaded: a weight type CTranslate2 knows, then the package itself."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise RunError(f"{named('quantization')} must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}",
                       "quantization")
    need("ctranslate2", "CTranslate2")


def numpy(t) -> np.ndarray:
    """A copy: CTranslate2 quantizes and transforms the arrays it is given in place, and a view
    would change the model's own weights (it did: a benchmark that exported first translated garbage)."""
    return t.detach().float().cpu().numpy().copy()


class SpecWeights:
    """Our state_dict copied, by parameter name, into CTranslate2's layer specs."""

    def __init__(self, state: dict) -> None:
        self.w = state

    def linear(self, dst, name: str) -> None:
        """Set dst's weight (and bias, where the layer has one) from our linear layer `name`."""
        dst.weight = numpy(self.w[f"{name}.weight"])
        if f"{name}.bias" in self.w:
            dst.bias = numpy(self.w[f"{name}.bias"])

    def fused(self, dst, names: list[str]) -> None:
        """Set dst to our linear layers `names` stacked into one (CTranslate2 fuses Q/K/V and K/V)."""
        from ctranslate2.converters import utils
        from ctranslate2.specs import common_spec

        parts = [common_spec.LinearSpec() for _ in names]
        for part, name in zip(parts, names):
            self.linear(part, name)
        utils.fuse_linear(dst, parts)

    def norm(self, dst, name: str) -> None:
        """Set dst's gamma and beta from our LayerNorm `name`."""
        dst.gamma, dst.beta = numpy(self.w[f"{name}.gamma"]), numpy(self.w[f"{name}.beta"])

    def ffn(self, dst, prefix: str) -> None:
        """Set the feed-forward spec dst (both linear layers and its norm) from layer `prefix`."""
        self.linear(dst.linear_0, f"{prefix}.feed_forward.w_1")
        self.linear(dst.linear_1, f"{prefix}.feed_forward.w_2")
        self.norm(dst.layer_norm, f"{prefix}.ff_residual.norm")

    def encoder_layer(self, layer, prefix: str) -> None:
        """Fill one encoder layer spec from our encoder layer `prefix`."""
        self.fused(layer.self_attention.linear[0], [f"{prefix}.self_attn.{x}_proj" for x in "qkv"])
        self.linear(layer.self_attention.linear[1], f"{prefix}.self_attn.out_proj")
        self.norm(layer.self_attention.layer_norm, f"{prefix}.attn_residual.norm")
        self.ffn(layer.ffn, prefix)

    def decoder_layer(self, layer, prefix: str) -> None:
        """Fill one decoder layer spec (self-attention, cross-attention, feed-forward) from `prefix`."""
        self.fused(layer.self_attention.linear[0], [f"{prefix}.self_attn.{x}_proj" for x in "qkv"])
        self.linear(layer.self_attention.linear[1], f"{prefix}.self_attn.out_proj")
        self.norm(layer.self_attention.layer_norm, f"{prefix}.self_residual.norm")
        self.linear(layer.attention.linear[0], f"{prefix}.cross_attn.q_proj")
        self.fused(layer.attention.linear[1], [f"{prefix}.cross_attn.{x}_proj" for x in "kv"])
        self.linear(layer.attention.linear[2], f"{prefix}.cross_attn.out_proj")
        self.norm(layer.attention.layer_norm, f"{prefix}.cross_residual.norm")
        self.ffn(layer.ffn, prefix)


def empty_spec(config):
    """CTranslate2's TransformerSpec with our model's shape and special tokens, no weights yet."""
    from ctranslate2.specs import common_spec, transformer_spec

    spec = transformer_spec.TransformerSpec.from_config(
        (config.n_encoder_layers, config.n_decoder_layers), config.n_heads, pre_norm=config.norm == "pre",
        activation=getattr(common_spec.Activation, config.activation.upper()))  # RELU | GELU | SWISH
    spec.config.layer_norm_epsilon = config.layer_norm_eps
    spec.config.decoder_start_token, spec.config.bos_token = SPECIALS[2], SPECIALS[2]
    spec.config.eos_token, spec.config.unk_token = SPECIALS[3], SPECIALS[1]
    return spec


def fill_spec(spec, model, toks):
    """Fill `spec` (from empty_spec) with model's weights and toks' vocabularies; returns spec."""
    c, w = model.config, SpecWeights(model.state_dict())
    pe = numpy(model.positions.pe)
    for side, spec_side, embed in (("encoder", spec.encoder, "src_embed"), ("decoder", spec.decoder, "tgt_embed")):
        embeddings = spec_side.embeddings[0] if isinstance(spec_side.embeddings, list) else spec_side.embeddings
        embeddings.weight = numpy(w.w[f"{embed}.weight"])
        spec_side.scale_embeddings = True
        spec_side.position_encodings.encodings = pe
        if c.norm == "pre":
            w.norm(spec_side.layer_norm, f"{side}.final_norm")
    for i, layer in enumerate(spec.encoder.layer):
        w.encoder_layer(layer, f"encoder.layers.{i}")
    for i, layer in enumerate(spec.decoder.layer):
        w.decoder_layer(layer, f"decoder.layers.{i}")
    w.linear(spec.decoder.projection, "generator")  # with Marian's output bias, when the model has one
    spec.register_source_vocabulary(vocabulary(toks.src))
    spec.register_target_vocabulary(vocabulary(toks.tgt))
    return spec


def vocabulary(tok) -> list[str]:
    """The tokenizer's pieces in id order."""
    return [tok.id_to_token(i) for i in range(tok.get_vocab_size())]


def make_converter(translator):
    """A CTranslate2 Converter whose _load() returns the TransformerSpec of translator's model and
    tokenizers, so convert() validates, quantizes and writes it."""
    ctranslate2 = need("ctranslate2", "CTranslate2")

    class OurConverter(ctranslate2.converters.Converter):
        def _load(self):
            return fill_spec(empty_spec(translator.model.config), translator.model, translator.toks)

    return OurConverter()


def export_ctranslate2(translator, out: Path, name: str, quantization: str | None) -> None:
    """Write translator's model as a CTranslate2 model (weights of type `quantization`, None = float32),
    its tokenizers and a README naming the directory `name`, into `out`."""
    converter = make_converter(translator)  # outside the try: a missing package is need()'s message
    try:
        converter.convert(str(out), quantization=quantization, force=True)
    except (ValueError, RuntimeError) as e:  # what the engine's own validation refuses
        raise RunError(f"CTranslate2 refused the model: {str(e).splitlines()[0][:200]}") from None
    src, tgt = save_tokenizers(translator.toks, out)
    finish(out, README.format(name=name, quantization=quantization or "float32 (as trained)", src=src, tgt=tgt,
                              limit=translator.model.config.max_len - 1))


README = """# {name}: a transformer-cli model for CTranslate2

Weights: {quantization}. `{src}` (source) and `{tgt}` (target) hold the model's own tokenizer
(Hugging Face `tokenizers`); the source needs `</s>` at its end, as in training.

```python
import ctranslate2
from tokenizers import Tokenizer
src_tok, tgt_tok = Tokenizer.from_file("{name}/{src}"), Tokenizer.from_file("{name}/{tgt}")
translator = ctranslate2.Translator("{name}", device="cpu", inter_threads=1, intra_threads=2)
source = [src_tok.encode(s).tokens + ["</s>"] for s in ["I am a student."]]
results = translator.translate_batch(source, beam_size=5, max_decoding_length={limit})  # the model's positions
print([tgt_tok.decode([tgt_tok.token_to_id(t) for t in r.hypotheses[0]]) for r in results])
```

`beam_size=1` gives the same tokens as `transformer-cli translate --beam-size 1`. Beam search
ranks hypotheses with CTranslate2's own length penalty (`length_penalty`, default 1), transformer-cli
with GNMT's, so beam outputs can differ.
"""
