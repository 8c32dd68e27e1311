"""A SentencePiece model (an OPUS-MT source.spm / target.spm) as a Hugging Face `tokenizers` Unigram
tokenizer whose ids are a vocabulary's (Marian's vocab.json, permuted to our special ids).

MarianTokenizer cuts a text into pieces with SentencePiece, then looks each piece up in vocab.json
(a piece that is not there is <unk>). The tokenizer made here does both in one: its Unigram model
lists every token of the vocabulary at its id, and the pieces of this side's SentencePiece model
carry their SentencePiece scores, so the Viterbi search finds the SentencePiece segmentation. A token
the model lacks must never be matched (the other side's pieces of a joint vocabulary: a target-side
'"' would otherwise cover a character that SentencePiece calls <unk>), so it is listed with a
trailing space, which normalised text never holds (every space is escaped as ▁), and the decoder
drops that space again (data.tokenizer.encode_batch looks an <unk>'s text up among them, as
MarianTokenizer looks SentencePiece's unknown pieces up in vocab.json); the specials keep their names and a score that never wins. The normaliser and the ▁ handling follow the model's normalizer_spec
as transformers' SpmConverter does. Two differences from MarianTokenizer, both on purpose: text is
text (a literal "</s>" or "<pad>" typed in a sentence is encoded as characters, as SentencePiece
itself does, not as the control id), and a multilingual model's >>xx<< code is one token wherever it
is (MarianTokenizer: only at the start of a text; the start is where it belongs)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from data.errors import DataError
from data.tokenizer import SPECIALS, UNK_ID, UNMATCHABLE, text_only

NEVER_CHOSEN = -1e6  # the score of a token the SentencePiece model does not have (a piece scores > -100)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # ModelProto.SentencePiece.Type


def read_model(path: Path):
    """The ModelProto of a .spm file; DataError naming the file when it is missing or not one."""
    from sentencepiece import sentencepiece_model_pb2

    if not path.is_file():
        raise DataError(f"{path}: SentencePiece model not found")
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError has no stable import path
        raise DataError(f"{path}: not a SentencePiece model ({str(e)[:80]})") from None
    if not proto.pieces:
        raise DataError(f"{path}: not a SentencePiece model (no pieces)")
    if proto.trainer_spec.model_type != 1:  # UNIGRAM
        kind = {2: "BPE", 3: "word", 4: "char"}.get(proto.trainer_spec.model_type, "unknown")
        raise DataError(f"{path}: a {kind} SentencePiece model; OPUS-MT models are unigram models")
    if not proto.normalizer_spec.escape_whitespaces:
        raise DataError(f"{path}: a SentencePiece model that keeps spaces unescaped is not supported")
    if proto.trainer_spec.byte_fallback:
        raise DataError(f"{path}: byte-fallback SentencePiece models are not supported")
    return proto


def pieces(proto) -> dict[str, float]:
    """The model's text pieces (normal and user-defined) and their scores."""
    return {p.piece: p.score for p in proto.pieces if p.type in (NORMAL, USER_DEFINED)}


def unigram_tokenizer(proto, vocab: list[str], codes: tuple[str, ...] = ()) -> Tokenizer:
    """A Unigram tokenizer with token `vocab[i]` at id i (our specials at 0-3) that segments text as
    the SentencePiece model `proto` does; `codes` (>>xx<< language tokens) are single tokens."""
    scores, keep = pieces(proto), set(SPECIALS) | set(codes)
    entries = [(token, scores[token]) if token in scores else (token, NEVER_CHOSEN) if token in keep
               else (token + UNMATCHABLE, NEVER_CHOSEN) for token in vocab]
    tok = Tokenizer(models.Unigram(entries, unk_id=UNK_ID, byte_fallback=False))
    tok.normalizer = _normalizer(proto.normalizer_spec)
    steps = [decoders.Replace(UNMATCHABLE, ""), decoders.Replace("▁", " ")]
    if proto.normalizer_spec.add_dummy_prefix:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
        steps += [decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    tok.decoder = decoders.Sequence(steps)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    if codes:
        tok.add_tokens([AddedToken(c, special=False, normalized=False, single_word=False) for c in codes])
    return text_only(tok)


def _normalizer(spec) -> normalizers.Normalizer:
    """SentencePiece's normalisation in its order: the precompiled character map (nmt_nfkc etc.),
    extra spaces removed, spaces escaped as ▁ (as transformers' SpmConverter builds it)."""
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:  # Metaspace adds no prefix to a text that starts with ▁; SentencePiece does
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    return normalizers.Sequence(steps)
