"""Export to CTranslate2 with the engine's own converter API: a `Converter` whose `_load()` fills
CTranslate2's `TransformerSpec` from our weights (as its OpenNMT-py and fairseq converters do), so
`convert()` validates, quantizes and writes the model in the engine's format. Post-norm and
pre-norm, shared or separate vocabularies; our sinusoidal table is given to the engine as is."""

from __future__ import annotations

import shutil
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


def make_converter(translator):
    ctranslate2 = need("ctranslate2", "CTranslate2")
    from ctranslate2.converters import utils
    from ctranslate2.specs import common_spec, transformer_spec

    class OurConverter(ctranslate2.converters.Converter):
        def _load(self):
            model, toks = translator.model, translator.toks
            c, w = model.config, model.state_dict()
            spec = transformer_spec.TransformerSpec.from_config(
                (c.n_encoder_layers, c.n_decoder_layers), c.n_heads, pre_norm=c.norm == "pre",
                activation=common_spec.Activation.RELU)
            spec.config.layer_norm_epsilon = c.layer_norm_eps
            spec.config.decoder_start_token, spec.config.bos_token = SPECIALS[2], SPECIALS[2]
            spec.config.eos_token, spec.config.unk_token = SPECIALS[3], SPECIALS[1]

            def linear(dst, name):
                dst.weight = numpy(w[f"{name}.weight"])
                if f"{name}.bias" in w:
                    dst.bias = numpy(w[f"{name}.bias"])

            def fused(dst, names):
                parts = [common_spec.LinearSpec() for _ in names]
                for part, name in zip(parts, names):
                    linear(part, name)
                utils.fuse_linear(dst, parts)

            def norm(dst, name):
                dst.gamma, dst.beta = numpy(w[f"{name}.gamma"]), numpy(w[f"{name}.beta"])

            def ffn(dst, prefix, residual):
                linear(dst.linear_0, f"{prefix}.feed_forward.w_1")
                linear(dst.linear_1, f"{prefix}.feed_forward.w_2")
                norm(dst.layer_norm, f"{prefix}.{residual}.norm")

            pe = numpy(model.positions.pe)
            for side, spec_side, embed in (("encoder", spec.encoder, "src_embed"), ("decoder", spec.decoder, "tgt_embed")):
                embeddings = spec_side.embeddings[0] if isinstance(spec_side.embeddings, list) else spec_side.embeddings
                embeddings.weight = numpy(w[f"{embed}.weight"])
                spec_side.scale_embeddings = True
                spec_side.position_encodings.encodings = pe
                if c.norm == "pre":
                    norm(spec_side.layer_norm, f"{side}.final_norm")
            for i, layer in enumerate(spec.encoder.layer):
                p = f"encoder.layers.{i}"
                fused(layer.self_attention.linear[0], [f"{p}.self_attn.{x}_proj" for x in "qkv"])
                linear(layer.self_attention.linear[1], f"{p}.self_attn.out_proj")
                norm(layer.self_attention.layer_norm, f"{p}.attn_residual.norm")
                ffn(layer.ffn, p, "ff_residual")
            for i, layer in enumerate(spec.decoder.layer):
                p = f"decoder.layers.{i}"
                fused(layer.self_attention.linear[0], [f"{p}.self_attn.{x}_proj" for x in "qkv"])
                linear(layer.self_attention.linear[1], f"{p}.self_attn.out_proj")
                norm(layer.self_attention.layer_norm, f"{p}.self_residual.norm")
                linear(layer.attention.linear[0], f"{p}.cross_attn.q_proj")
                fused(layer.attention.linear[1], [f"{p}.cross_attn.{x}_proj" for x in "kv"])
                linear(layer.attention.linear[2], f"{p}.cross_attn.out_proj")
                norm(layer.attention.layer_norm, f"{p}.cross_residual.norm")
                ffn(layer.ffn, p, "ff_residual")
            spec.decoder.projection.weight = numpy(w["generator.weight"])
            vocab = lambda tok: [tok.id_to_token(i) for i in range(tok.get_vocab_size())]  # noqa: E731
            spec.register_source_vocabulary(vocab(toks.src))
            spec.register_target_vocabulary(vocab(toks.tgt))
            return spec

    return OurConverter()


def export_ctranslate2(translator, out: Path, name: str, quantization: str | None) -> None:
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
