"""Export to ONNX: an encoder graph and a decoder-step graph with the key/value cache as inputs and
outputs, the layout ONNX Runtime users know from encoder-decoder models.

encoder.onnx:  source_ids (batch, src_len) int64, </s> last, <pad> after
               -> cross_key.i, cross_value.i (batch, heads, src_len, d_k) for every decoder layer i:
                  the encoder output projected once for each layer's cross-attention
decoder.onnx:  input_ids (batch, 1) the last token (<s> first); source_mask (batch, src_len) int64,
               1 = a real source token; cross_key.i / cross_value.i from the encoder;
               past_key.i / past_value.i (batch, heads, past_len, d_k), past_len 0 at the first step
               -> logits (batch, tgt_vocab) of the next token; present_key.i / present_value.i
                  (batch, heads, past_len + 1, d_k): the next step's past
The graphs run our own modules (the model's decode() with its cache), exported by torch.onnx."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from transformer.attention import KeyValue
from transformer.model import DecoderCache
from transformer_cli.errors import RunError
from transformer_cli.exporters.common import finish, need, save_tokenizers

OPSET = 18


def cache_names(prefix: str, n_layers: int) -> list[str]:
    """The graph names of one key/value tensor per layer: {prefix}_key.i, {prefix}_value.i for each layer i."""
    return [f"{prefix}_{kind}.{i}" for i in range(n_layers) for kind in ("key", "value")]


class EncoderGraph(nn.Module):
    """encoder.onnx: source ids -> each decoder layer's cross-attention keys and values."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, source_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(cross_key.0, cross_value.0, ...), each (batch, heads, src_len, d_k), from source_ids (batch, src_len)."""
        cache, _ = self.model.encode(source_ids)
        return tuple(t for kv in cache.memory_kv for t in (kv.k, kv.v))


class DecoderStepGraph(nn.Module):
    """decoder.onnx: one decoding step over the key/value cache."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.n = len(model.decoder.layers)

    def forward(self, input_ids: torch.Tensor, source_mask: torch.Tensor, *caches: torch.Tensor):
        """(logits of the next token (batch, vocab), present_key.0, present_value.0, ...) from the last
        token input_ids (batch, 1), source_mask and caches: every layer's cross keys/values, then its past."""
        n = self.n
        cross = [KeyValue(caches[2 * i], caches[2 * i + 1]) for i in range(n)]
        past = [KeyValue(caches[2 * n + 2 * i], caches[2 * n + 2 * i + 1]) for i in range(n)]
        cache = DecoderCache(memory_kv=cross, src_mask=source_mask.bool()[:, None, None, :], self_kv=past,
                             length=past[0].k.size(2))
        logits, _, _ = self.model.decode(input_ids, cache)  # (batch, 1, vocab)
        return (logits[:, -1], *(t for kv in cache.self_kv for t in (kv.k, kv.v)))


def export_onnx(translator, out: Path, name: str) -> None:
    """Write translator's model as encoder.onnx and decoder.onnx, its tokenizers and a README naming the
    directory `name`, into `out`."""
    need("onnx", "ONNX")
    need("onnxscript", "ONNX")
    model = translator.model.eval()
    c = model.config
    n, d_k = c.n_decoder_layers, c.d_model // c.n_heads
    out.mkdir(parents=True, exist_ok=True)
    batch, src_len, past = torch.export.Dim("batch"), torch.export.Dim("src_len", max=c.max_len), \
        torch.export.Dim("past_len", max=c.max_len - 1)
    src = torch.tensor([[5, 6, 7, EOS_ID], [8, 9, EOS_ID, PAD_ID]])
    with torch.no_grad():
        cross = EncoderGraph(model)(src)
    _export(EncoderGraph(model), (src,), out / "encoder.onnx", ["source_ids"], cache_names("cross", n),
            ({0: batch, 1: src_len},))
    past_kv = tuple(torch.zeros(2, c.n_heads, 3, d_k) for _ in range(2 * n))
    inputs = (torch.tensor([[BOS_ID], [BOS_ID]]), (src != PAD_ID).long(), *cross, *past_kv)
    shapes = ({0: batch}, {0: batch, 1: src_len},  # the varargs caches form one tuple
              tuple([{0: batch, 2: src_len}] * (2 * n) + [{0: batch, 2: past}] * (2 * n)))
    _export(DecoderStepGraph(model), inputs, out / "decoder.onnx",
            ["input_ids", "source_mask", *cache_names("cross", n), *cache_names("past", n)],
            ["logits", *cache_names("present", n)], shapes)
    src, tgt = save_tokenizers(translator.toks, out)
    finish(out, README.format(name=name, n=n, heads=c.n_heads, d_k=d_k, src=src, tgt=tgt, limit=c.max_len - 1))


@contextmanager
def _quiet_exporter():
    """torch.onnx logs a line per optional library it skips (torchvision); not the user's business."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], shapes) -> None:
    try:
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=inputs,
                                        output_names=outputs, dynamic_shapes=shapes, opset_version=OPSET,
                                        external_data=False, verbose=False)
        program.save(str(path))
    except Exception as e:  # the exporter raises many types; the message is what helps (the cause stays chained)
        raise RunError(f"ONNX export of {path.name} failed: {str(e).splitlines()[0][:200]}") from e


README = """# {name}: a transformer-cli model as ONNX graphs

`encoder.onnx` maps `source_ids` (batch, src_len; the ids of `{src}` plus `</s>`, right-padded
with `<pad>` = 0) to `cross_key.i` / `cross_value.i` for each of the {n} decoder layers.
`decoder.onnx` takes `input_ids` (batch, 1), `source_mask` (batch, src_len; 1 = real token), those
cross keys/values and `past_key.i` / `past_value.i` (batch, {heads}, past_len, {d_k}; past_len 0 at the
first step) and returns `logits` (batch, vocabulary) and `present_key.i` / `present_value.i`.

```python
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
src_tok, tgt_tok = Tokenizer.from_file("{name}/{src}"), Tokenizer.from_file("{name}/{tgt}")
enc = ort.InferenceSession("{name}/encoder.onnx")
dec = ort.InferenceSession("{name}/decoder.onnx")
ids = np.array([src_tok.encode("I am a student.").ids + [3]], dtype=np.int64)   # 3 = </s>
cross = enc.run(None, {{"source_ids": ids}})
feed = {{"source_mask": np.ones_like(ids)}}
feed.update({{f"cross_{{k}}.{{i}}": cross[2 * i + j] for i in range({n}) for j, k in enumerate(("key", "value"))}})
past = {{f"past_{{k}}.{{i}}": np.zeros((1, {heads}, 0, {d_k}), np.float32) for i in range({n}) for k in ("key", "value")}}
token, out = 2, []                                          # 2 = <s>
for _ in range({limit}):                                    # greedy, within the model's positions
    logits, *present = dec.run(None, {{"input_ids": np.array([[token]]), **feed, **past}})
    token = int(logits[0].argmax())
    if token == 3:
        break
    out.append(token)
    past = dict(zip(past, present))
print(tgt_tok.decode(out))
```
"""
