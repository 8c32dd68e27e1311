"""A model directory loaded for use: the model, its tokenizers, and translation of text batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.batching import pad_rows, token_groups
from data.errors import DataError
from data.tokenizer import BOS_ID, EOS_ID, Tokenizers, decode, encode_batch
from transformer.beam import beam_search
from transformer.checkpoint import MODEL_FILE, CheckpointError, list_checkpoints, load_model, read_config
from transformer.decoding import Hypothesis, greedy_search
from transformer.model import Transformer
from transformer.packed import pack_linears

from transformer_cli.errors import RunError
from transformer_cli.runtime import check_decoding, check_range, pick_device


@dataclass
class Translation:
    text: str
    score: float = 0.0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    nbest: list[tuple[str, float]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SearchOptions:
    """How to search for a translation (the translate command's flags)."""

    beam_size: int = 5  # hypotheses kept per step; 1 = greedy
    n_best: int = 1  # hypotheses returned per sentence (Translation.nbest)
    length_penalty: float = 1.0  # GNMT alpha: ranked by log P / ((5 + |Y|) / 6)^alpha (1.0: best on
    # Multi30k validation, bench/RESULTS.md)
    max_len_a: float = 1.5  # at most max_len_a * source length + max_len_b output tokens
    max_len_b: int = 10
    batch_tokens: int = 4000  # source tokens per batch

    def __post_init__(self) -> None:
        check_decoding(self.beam_size, self.length_penalty, self.max_len_a, self.max_len_b, self.n_best)
        check_range("--batch-tokens", self.batch_tokens, 1, 10_000_000)


def resolve_checkpoint(run_dir: Path, name: str) -> Path:
    """'step-N', 'N' or a checkpoint directory -> the checkpoint directory of run_dir."""
    direct = Path(name)
    if (direct / MODEL_FILE).is_file() and (direct / "state.json").is_file():
        return direct
    number = name.removeprefix("step-")
    found = list_checkpoints(run_dir / "checkpoints")
    for ckpt in found:
        if number.isdigit() and int(ckpt.name.split("-")[1]) == int(number):
            return ckpt
    names = ", ".join(c.name for c in found) or "none"
    raise RunError(f"{run_dir}: no checkpoint {name!r} (checkpoints: {names})")


def load_run(run_dir: str | Path, device: str = "cpu", precision: str = "fp32", pack: bool = True,
             checkpoint: str | None = None) -> "Translator":
    """A run directory from `train`, checked and loaded for translation; every problem is a RunError.
    device: cpu | cuda | auto; precision: fp32 | bf16; pack: on the CPU, linear layers with their
    weights packed once for oneDNN (transformer.packed; faster decoding, same parameters);
    checkpoint: the weights of one of the run's checkpoints ('step-N') instead of its final model."""
    run_dir = Path(run_dir)
    if precision not in ("fp32", "bf16"):
        raise RunError(f"--precision must be fp32 or bf16, got {precision!r}")
    device = str(pick_device(device))
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: model directory not found")
    try:
        config = read_config(run_dir)
        toks = Tokenizers.load(run_dir)
        weights = resolve_checkpoint(run_dir, checkpoint) / MODEL_FILE if checkpoint else run_dir / MODEL_FILE
        if not weights.is_file():
            raise RunError(f"{run_dir}: no {MODEL_FILE} (is training finished, or was it interrupted "
                           "before the first validation?)")
        expected = config.get("data", {}).get("tokenizer_fingerprint")
        if expected and expected != toks.fingerprint():
            raise RunError(f"{run_dir}: the tokenizer does not match the one the model was trained with")
        model_cfg = config.get("model", {})
        sizes = (toks.src.get_vocab_size(), toks.tgt.get_vocab_size())
        if sizes != (model_cfg.get("src_vocab_size"), model_cfg.get("tgt_vocab_size")):
            raise RunError(f"{run_dir}: tokenizer vocabularies {sizes} do not match the model's "
                           f"({model_cfg.get('src_vocab_size')}, {model_cfg.get('tgt_vocab_size')})")
        model = load_model(run_dir, device, weights)
    except (CheckpointError, DataError) as e:
        raise RunError(str(e)) from None
    if precision == "bf16":  # weights cast once, as inference engines do (autocast recasts every call)
        model.to(torch.bfloat16)
    if pack:
        pack_linears(model)
    return Translator(model, toks, torch.device(device), precision)


class Translator:
    def __init__(self, model: Transformer, toks: Tokenizers, device: torch.device, precision: str) -> None:
        self.model, self.toks, self.device, self.precision = model, toks, device, precision
        self.max_src_tokens = model.config.max_len - 1  # room for </s>
        self.truncated = 0

    def encode(self, texts: list[str]) -> list[list[int]]:
        out = []
        for ids in encode_batch(self.toks.src, texts):
            if len(ids) > self.max_src_tokens:
                self.truncated += 1
                ids = ids[: self.max_src_tokens]
            out.append(ids)
        return out

    def batches(self, ids: list[list[int]], batch_tokens: int) -> list[list[int]]:
        """Indices grouped into batches of at most batch_tokens padded source tokens, by length."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        return token_groups(order, [len(r) + 1 for r in ids], batch_tokens)

    def tensor(self, rows: list[list[int]]) -> torch.Tensor:
        return pad_rows(rows, None, EOS_ID).to(self.device)  # (batch, longest + 1): ids </s> <pad>...

    @torch.inference_mode()
    def translate(self, texts: list[str], options: SearchOptions = SearchOptions()) -> list[Translation]:
        """One Translation per text, in order; an empty or blank text gives an empty translation."""
        o = options
        results = [Translation("") for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]  # empty lines stay empty, no model call
        ids = self.encode([texts[i].strip() for i in todo])
        for group in self.batches(ids, o.batch_tokens):
            src = self.tensor([ids[g] for g in group])
            if o.beam_size == 1:
                hyps = [[h] for h in greedy_search(self.model, src, BOS_ID, EOS_ID, o.max_len_a, o.max_len_b,
                                                    o.length_penalty)]
            else:
                hyps = beam_search(self.model, src, BOS_ID, EOS_ID, o.beam_size, o.n_best, o.length_penalty,
                                   o.max_len_a, o.max_len_b)
            for g, nbest in zip(group, hyps):
                results[todo[g]] = self.result(nbest)
        return results

    def result(self, nbest: list[Hypothesis]) -> Translation:
        best = nbest[0]
        ids = best.without_eos(EOS_ID)
        return Translation(
            text=decode(self.toks.tgt, ids), score=best.score,
            tokens=[self.toks.tgt.id_to_token(i) for i in best.tokens], token_logprobs=best.token_logprobs,
            nbest=[(decode(self.toks.tgt, h.without_eos(EOS_ID)), h.score) for h in nbest], ids=ids)

    def inspect(self, text: str, target: str | None = None, beam_size: int = 1,
                target_ids: list[int] | None = None) -> Inspection:
        """Teacher-forced forward over (source, output) returning every attention map. Without
        `target` the output is the model's own translation, so these are the weights that produced it.
        target_ids: the output as token ids (another model's translation, for comparing maps)."""
        src_ids = self.encode([text.strip()])[0]
        if target_ids is not None:
            out_ids, translation = target_ids, decode(self.toks.tgt, target_ids)
        elif target is None:
            result = self.translate([text], SearchOptions(beam_size=beam_size))[0]
            out_ids, translation = result.ids, result.text
        else:
            out_ids = encode_batch(self.toks.tgt, [target.strip()])[0][: self.model.config.max_len - 1]
            translation = decode(self.toks.tgt, out_ids)
        src = self.tensor([src_ids])
        tgt_in = torch.tensor([[BOS_ID] + out_ids], device=self.device)
        with torch.inference_mode():
            _, maps = self.model(src, tgt_in, return_attention=True)
        src_tok, tgt_tok = self.toks.src.id_to_token, self.toks.tgt.id_to_token
        return Inspection(
            source=text.strip(), translation=translation,
            src_tokens=[src_tok(i) for i in src_ids] + ["</s>"],
            tgt_in_tokens=["<s>"] + [tgt_tok(i) for i in out_ids],
            out_tokens=[tgt_tok(i) for i in out_ids] + ["</s>"], maps=maps, out_ids=list(out_ids))

    @torch.inference_mode()
    def alignment(self, source: str, translation: Translation) -> str:
        """Pharaoh 'src-tgt' word pairs read from cross-attention (see align_words)."""
        if not source.strip() or not translation.ids:
            return ""
        src_ids = self.encode([source.strip()])[0]
        tgt = torch.tensor([[BOS_ID] + translation.ids], device=self.device)
        _, maps = self.model(self.tensor([src_ids]), tgt, return_attention=True)
        pairs = align_words(maps.cross[-1].weights[0], [self.toks.src.id_to_token(i) for i in src_ids],
                            [self.toks.tgt.id_to_token(i) for i in translation.ids])
        return " ".join(f"{s}-{t}" for t, s, _ in pairs)


def align_words(cross: torch.Tensor, src_pieces: list[str], out_pieces: list[str]
                ) -> list[tuple[int, int, float]]:
    """Word alignment from one layer's cross-attention (heads, out_len(+1), src_len(+1)), mean over
    heads: for each output word, the source word its first subword attends to most. Row t is the
    step that produced output token t. Returns (output word, source word, weight) indices."""
    weights = cross.mean(0)  # (out_len, src_len)
    src_words, out_words = word_index(src_pieces), word_index(out_pieces)
    pairs, seen = [], set()
    for t, w in enumerate(out_words):
        if w in seen:
            continue
        seen.add(w)
        s = int(weights[t, : len(src_pieces)].argmax())
        pairs.append((w, src_words[s], float(weights[t, s])))
    return pairs


def word_index(pieces: list[str]) -> list[int]:
    """Word number of each subword: a piece starting with ▁ opens a new word, and punctuation
    (which the tokenizer isolates) is a word of its own."""
    import unicodedata

    def punctuation(piece: str) -> bool:
        text = piece.lstrip("▁")
        return bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)

    out, word, previous_punct = [], -1, False
    for p in pieces:
        punct = punctuation(p)
        if word < 0 or p.startswith("▁") or punct or previous_punct:
            word += 1
        out.append(word)
        previous_punct = punct
    return out


@dataclass
class Inspection:
    """Everything inspect-attention shows for one sentence."""

    source: str
    translation: str
    src_tokens: list[str]  # encoder positions: source subwords + </s>
    tgt_in_tokens: list[str]  # decoder inputs: <s> + output subwords
    out_tokens: list[str]  # what each decoder position produced: output subwords + </s>
    maps: object  # transformer.model.AttentionMaps, batch of one
    out_ids: list[int] = field(default_factory=list)  # the output's token ids (without </s>)


def load_other(spec: str, run_dir: str | Path, device: str = "cpu") -> Translator:
    """A second model to compare with run_dir's: another run directory, a checkpoint directory, or
    one of run_dir's checkpoints ('step-N'). Refused unless it reads and writes the same tokens."""
    path = Path(spec)
    if (path / "config.json").is_file():
        return load_run(path, device, pack=False)
    if (path / MODEL_FILE).is_file() and (path / "state.json").is_file():
        return load_run(path.parent.parent, device, pack=False, checkpoint=str(path))
    return load_run(run_dir, device, pack=False, checkpoint=spec)


def check_comparable(a: Translator, b: Translator, label: str) -> None:
    """Same tokenizers and the same numbers of layers and heads, so every map has a partner."""
    if a.toks.fingerprint() != b.toks.fingerprint():
        raise RunError(f"{label}: its tokenizer differs, so its maps cannot be laid over these token by token")
    ca, cb = a.model.config, b.model.config
    shape = lambda c: (c.n_encoder_layers, c.n_decoder_layers, c.n_heads)  # noqa: E731
    if shape(ca) != shape(cb):
        raise RunError(f"{label}: {shape(cb)} encoder layers, decoder layers and heads against {shape(ca)}")
