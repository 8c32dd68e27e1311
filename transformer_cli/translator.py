"""A model directory loaded for use, and the one path from text to translations and attention maps.

    translator = load_run("work/demo/run")
    translator.translate(["I am a student."])        # search: [Translation(text=..., score=..., ...)]
    translator.inspect("I am a student.")             # search, then teacher forcing: every attention map

Everything that reads attention (inspect-attention, jsonl alignments, the training dashboard's map,
explain) goes through Translator.teacher_force; everything that translates through Translator.search.
A Translator holds no counters: what a call measured (a truncated source) is in what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.batching import pad_rows, token_groups
from data.errors import DataError
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Tokenizers, decode, encode_batch
from transformer.beam import BeamSession, beam_search
from transformer.checkpoint import MODEL_FILE, CheckpointError, list_checkpoints, load_model, read_config
from transformer.coverage import check_beta
from transformer.decoding import Hypothesis, check_length_style, greedy_search, sample_search, score_targets
from transformer.ensemble import Ensemble
from transformer.model import AttentionMaps, Transformer
from transformer.packed import pack_linears
from transformer.penalties import Penalties
from transformer.prefix import Prefix
from transformer.sampling import Sampling
from transformer.shortlist import Shortlist, Shortlisted

from transformer_cli.errors import ParamError, RunError, named
from transformer_cli.runtime import check_decoding, check_range, pick_device
from transformer_cli.search_defaults import options_for, overriding
from transformer_cli.shortlist import check_shortlist_search, load_shortlist
from transformer_cli.unknowns import pieces_text, replaced_pieces, source_pieces

PRECISIONS = ("fp32", "bf16", "int8")  # int8: dynamic int8 linear layers on the CPU (transformer/packed.py)
MAX_SAMPLES = 1000  # n_best with sampling: draws per sentence at most
NEVER_OUTPUT = (PAD_ID, BOS_ID)  # ids the search never produces (log p set to -inf, transformer.decoding)


@dataclass
class Translation:
    """One sentence's translation: the best hypothesis, its tokens and scores, the n-best list."""

    text: str
    score: float = 0.0  # log P / length penalty of the best hypothesis
    tokens: list[str] = field(default_factory=list)  # output subwords, </s> last when it ended
    token_logprobs: list[float] = field(default_factory=list)  # log p of each of `tokens`
    nbest: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    ids: list[int] = field(default_factory=list)  # output token ids without </s>
    src_ids: list[int] = field(default_factory=list)  # the source as the model read it (without </s>)
    truncated: bool = False  # the source was longer than the model's positions and was cut


@dataclass(frozen=True)
class SearchOptions:
    """How to search for a translation (the translate command's flags)."""

    beam_size: int = 5  # hypotheses kept per step; 1 = greedy
    n_best: int = 1  # hypotheses returned per sentence (Translation.nbest)
    length_penalty: float = 1.0  # alpha: ranked by log P / lp(|Y|) (1.0: best on Multi30k validation
    # with gnmt, bench/RESULTS.md)
    length_style: str = field(default="gnmt", kw_only=True)  # lp: gnmt ((5 + |Y|) / 6)^alpha, or average
    # |Y|^alpha as Hugging Face transformers, CTranslate2 and Marian; |Y| counts </s> (decoding.length_penalty)
    max_len_a: float = 1.5  # at most max_len_a * source length + max_len_b output tokens
    max_len_b: int = 10
    batch_tokens: int = 4000  # source tokens per batch
    # random sampling instead of search (transformer/sampling.py), on when sampling_topk != 1 or
    # sampling_topp < 1: each token drawn from the sampling_topk most probable (0 = all) within
    # probability sampling_topp, at temperature; n_best samples per sentence; reproducible per seed
    sampling_topk: int = field(default=1, kw_only=True)
    sampling_topp: float = field(default=1.0, kw_only=True)
    temperature: float = field(default=1.0, kw_only=True)
    seed: int = field(default=0, kw_only=True)
    no_repeat_ngram_size: int = field(default=0, kw_only=True)  # 0: off (transformer/penalties.py)
    repetition_penalty: float = field(default=1.0, kw_only=True)  # 1: off; CTRL's, on the logits
    replace_unk: bool = field(default=False, kw_only=True)  # an output <unk> -> the source token it attends to most
    coverage_penalty: float = field(default=0.0, kw_only=True)  # beta of GNMT's coverage penalty on the
    # finished hypotheses of a beam search (transformer/coverage.py); 0: off

    def __post_init__(self) -> None:
        check_decoding(self.beam_size, self.length_penalty, self.max_len_a, self.max_len_b,
                       1 if self.sampling else self.n_best)
        check_range("batch_tokens", self.batch_tokens, 1, 10_000_000)
        try:
            check_length_style(self.length_style)
            check_beta(self.coverage_penalty)
            self.penalties, self.sampler  # noqa: B018 (each checks its values)
        except ParamError as e:
            raise RunError.wrap(e) from None
        if self.sampling:
            if self.beam_size != 1:
                raise RunError(f"{named('sampling_topk')}/{named('sampling_topp')} draw one token per step: "
                               f"use {named('beam_size')} 1 (got {self.beam_size})", "beam_size")
            check_range("n_best", self.n_best, 1, MAX_SAMPLES)
        if self.coverage_penalty and self.beam_size == 1:
            raise RunError(f"{named('coverage_penalty')} ranks the finished hypotheses of a beam search: use "
                           f"{named('beam_size')} 2 or more (got 1)", "coverage_penalty", "beam_size")

    @property
    def sampling(self) -> bool:
        """Tokens are drawn, not searched for."""
        return self.sampling_topk != 1 or self.sampling_topp < 1.0

    @property
    def sampler(self) -> Sampling:
        """The sampling fields as transformer.sampling takes them."""
        return Sampling(self.sampling_topk, self.sampling_topp, self.temperature, self.seed)

    @property
    def penalties(self) -> Penalties:
        """The repetition fields as transformer.penalties takes them."""
        return Penalties(self.no_repeat_ngram_size, self.repetition_penalty)


@dataclass(frozen=True)
class Encoded:
    """Texts as source token ids, and which of them were cut to the model's length."""

    ids: list[list[int]]  # one row per text, without </s>
    truncated: list[bool]


@dataclass
class Inspection:
    """One teacher-forced pass over (source, output): every attention map and what each position read
    and produced. Everything inspect-attention, explain and the dashboard show for one sentence."""

    source: str
    translation: str
    src_tokens: list[str]  # encoder positions: source subwords + </s>
    tgt_in_tokens: list[str]  # decoder inputs: <s> + output subwords (shifted right)
    out_tokens: list[str]  # what each decoder position produced: output subwords (+ </s> when it ended)
    maps: AttentionMaps  # batch of one: weights and scores of every layer and head
    out_ids: list[int] = field(default_factory=list)  # the output's token ids (without </s>)
    src_ids: list[int] = field(default_factory=list)  # the source's token ids (without </s>)
    log_probs: torch.Tensor | None = None  # (out_len, tgt_vocab) float64: log p of every token at every step
    truncated: bool = False  # the source was cut to the model's length


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
             checkpoint: str | None = None, shortlist: bool = False) -> "Translator":
    """A run directory from `train`, checked and loaded for translation; every problem is a RunError.
    device: cpu | cuda | auto; precision: fp32 | bf16 | int8 (CPU only: every linear layer in
    dynamic int8, transformer/packed.py); pack: on the CPU, linear layers with their weights packed
    once for oneDNN (transformer.packed; faster decoding, same parameters);
    checkpoint: the weights of one of the run's checkpoints ('step-N') instead of its final model;
    the Translator's defaults (what a call without options searches with) are RUN/search.json's;
    shortlist: beam search and greedy decoding score only each batch's shortlist of target tokens
    (RUN/shortlist.safetensors, made by transformer_cli.shortlist.make_shortlist)."""
    run_dir = Path(run_dir)
    check_precision(precision)
    device = str(pick_device(device))
    if precision == "int8" and (device != "cpu" or not pack or not torch.backends.mkldnn.is_available()):
        raise RunError(f"{named('precision')} int8 runs on the CPU with oneDNN's packed layers "
                       f"(device {device}{', pack off' if not pack else ''})", "precision")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: model directory not found")
    try:
        model, toks = _read_run(run_dir, device, checkpoint)
    except (CheckpointError, DataError) as e:
        raise RunError.wrap(e) from None
    if precision == "bf16":  # weights cast once, as inference engines do (autocast recasts every call)
        model.to(torch.bfloat16)
    if pack:
        pack_linears(model, int8=(lambda name, layer: True) if precision == "int8" else None)
    table = load_shortlist(run_dir, toks, model.config.src_vocab_size, model.config.tgt_vocab_size) \
        if shortlist else None
    return Translator(model, toks, torch.device(device), precision, table, options_for([run_dir]))


def check_precision(precision: str) -> None:
    """precision must be one of PRECISIONS (a RunError naming it)."""
    if precision not in PRECISIONS:
        raise RunError(f"{named('precision')} must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got "
                       f"{precision!r}", "precision")


def load_ensemble(run_dirs: list[str | Path], device: str = "cpu", precision: str = "fp32",
                  pack: bool = True, shortlist: bool = False) -> "Translator":
    """Several run directories searched as one model (transformer/ensemble.py: the mean of their
    log-probabilities at every step). They must have the same target vocabulary and read the
    source the same way (RunError naming the two runs otherwise); one directory is load_run's
    (shortlist: only for one directory)."""
    if shortlist and len(run_dirs) > 1:
        raise RunError(f"an ensemble searches its models' whole vocabulary: {named('shortlist')} takes one model",
                       "shortlist")
    translators = [load_run(d, device, precision, pack, shortlist=shortlist) for d in run_dirs]
    first = translators[0]
    for d, t in zip(run_dirs[1:], translators[1:]):
        if first.toks.tgt.get_vocab() != t.toks.tgt.get_vocab():
            raise RunError(f"cannot ensemble {run_dirs[0]} and {d}: their target vocabularies differ")
        if first.toks.src.to_str() != t.toks.src.to_str():
            raise RunError(f"cannot ensemble {run_dirs[0]} and {d}: their source tokenizers differ")
    if len(translators) == 1:
        return first
    return Translator(Ensemble([t.model for t in translators]), first.toks, first.device, precision,
                      defaults=options_for(run_dirs))


def _read_run(run_dir: Path, device: str, checkpoint: str | None) -> tuple[Transformer, Tokenizers]:
    """The model and tokenizers of a run directory, checked against each other."""
    config = read_config(run_dir)
    toks = Tokenizers.load(run_dir)
    weights = resolve_checkpoint(run_dir, checkpoint) / MODEL_FILE if checkpoint else run_dir / MODEL_FILE
    if not weights.exists():
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
    return load_model(run_dir, device, weights), toks


class Translator:
    """A model and its tokenizers: text -> translations (search) and -> attention maps (teacher
    forcing). Stateless between calls; safe to share between requests that take turns."""

    def __init__(self, model: Transformer, toks: Tokenizers, device: torch.device, precision: str = "fp32",
                 shortlist: Shortlist | None = None, defaults: SearchOptions | None = None) -> None:
        self.model, self.toks, self.device, self.precision = model, toks, device, precision
        self.shortlist = shortlist  # decode over each batch's shortlist of target tokens (search only)
        # what a call that passes no options searches with: the run's search.json over SearchOptions()
        self.defaults = defaults or SearchOptions()
        self.max_src_tokens = model.config.max_len - 1  # room for </s>

    def options(self, **given) -> SearchOptions:
        """The defaults with each field of `given` that is not None: how explain and inspect search as
        translate does (the run's length penalty) with a beam of their own."""
        return overriding(self.defaults, given)

    def encode(self, texts: list[str]) -> Encoded:
        """Source ids of each text, cut to the model's length (Encoded.truncated says which were)."""
        rows = encode_batch(self.toks.src, texts)
        return Encoded([ids[: self.max_src_tokens] for ids in rows], [len(ids) > self.max_src_tokens for ids in rows])

    def batches(self, ids: list[list[int]], batch_tokens: int) -> list[list[int]]:
        """Indices grouped into batches of at most batch_tokens padded source tokens, by length."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        return token_groups(order, [len(r) + 1 for r in ids], batch_tokens)

    def tensor(self, rows: list[list[int]]) -> torch.Tensor:
        """Source rows as one padded batch: (batch, longest + 1) ids, </s>, <pad>..."""
        return pad_rows(rows, None, EOS_ID).to(self.device)

    def prefix(self, rows: list[list[int]] | None) -> Prefix | None:
        """Target prefixes (output ids, possibly none) as the searches take them (transformer/prefix.py);
        None when no row has one."""
        return Prefix.of(rows, self.device) if rows and any(rows) else None

    @torch.inference_mode()
    def search(self, rows: list[list[int]], options: SearchOptions | None = None,
               prefixes: list[list[int]] | None = None) -> list[list[Hypothesis]]:
        """The n-best hypotheses of each source row (ids without </s>), in order, batched by length;
        prefixes: each row's forced first output ids (transformer/prefix.py). No hypothesis contains
        <pad> or <s> (NEVER_OUTPUT) beyond its prefix. With a shortlist, each batch decodes over the
        target tokens of its rows' shortlist and prefixes only (log p renormalised over them), so a
        row's output may depend on the other rows of its batch; sampling is refused."""
        o, out = options or self.defaults, [[] for _ in rows]
        if self.shortlist is not None:
            check_shortlist_search(o)
        for group in self.batches(rows, o.batch_tokens):
            src = self.tensor([rows[g] for g in group])
            forced = [prefixes[g] for g in group] if prefixes else None
            model = self.model if self.shortlist is None else self._shortlisted(src, forced)
            to = model.position if self.shortlist is not None else int  # target id -> the model's token number
            prefix = self.prefix([[to(t) for t in r] for r in forced] if forced else None)
            bos, eos = to(BOS_ID), to(EOS_ID)
            common = dict(length_style=o.length_style, banned=tuple(map(to, NEVER_OUTPUT)), penalties=o.penalties,
                          prefix=prefix)
            if o.sampling:
                hyps = sample_search(model, src, bos, eos, o.sampler, o.n_best, o.max_len_a, o.max_len_b,
                                     o.length_penalty, **common)
            elif o.beam_size == 1:
                hyps = [[h] for h in greedy_search(model, src, bos, eos, o.max_len_a, o.max_len_b,
                                                    o.length_penalty, **common)]
            else:
                hyps = beam_search(model, src, bos, eos, o.beam_size, o.n_best, o.length_penalty,
                                   o.max_len_a, o.max_len_b, coverage_beta=o.coverage_penalty, **common)
            for g, nbest in zip(group, hyps):
                out[g] = nbest if self.shortlist is None else \
                    [Hypothesis(model.tokens(h.tokens), h.token_logprobs, h.score) for h in nbest]
        return out

    def _shortlisted(self, src: torch.Tensor, forced: list[list[int]] | None) -> Shortlisted:
        """The model over this batch's shortlist, widened by the tokens of its target prefixes."""
        ids = self.shortlist.ids(src)
        if forced and any(forced):
            ids = torch.unique(torch.cat([ids, torch.tensor([t for r in forced for t in r], dtype=ids.dtype)]))
        return Shortlisted(self.model, ids)

    @torch.inference_mode()
    def score_rows(self, rows: list[list[int]], targets: list[list[int]], options: SearchOptions | None = None
                   ) -> list[Hypothesis]:
        """The model's score of each given target (ids without </s>) for its source row: log P of
        target + </s>, divided by the length penalty of `options` as the search ranks (0: log P)."""
        options = options or self.defaults
        out: list[Hypothesis | None] = [None] * len(rows)
        for group in self.batches(rows, options.batch_tokens):
            hyps = score_targets(self.model, self.tensor([rows[g] for g in group]), [targets[g] for g in group],
                                 BOS_ID, EOS_ID, options.length_penalty, length_style=options.length_style)
            for g, h in zip(group, hyps):
                out[g] = h
        return out

    def target_ids(self, texts: list[str]) -> list[list[int]]:
        """Target-side texts as output ids, cut so that each and its </s> fit the model's positions."""
        return [ids[: self.model.config.max_len - 2] for ids in encode_batch(self.toks.tgt, [t.strip() for t in texts])]

    def beam_session(self, options: SearchOptions) -> BeamSession:
        """A beam search that sentences join between steps and leave when done (serve's continuous
        batching): session.admit(self.tensor(rows), keys), then session.step() -> [(key, n-best)].
        Each sentence gets what search() gives it (transformer/beam.py, tested)."""
        o = options
        return BeamSession(self.model, BOS_ID, EOS_ID, o.beam_size, o.n_best, o.length_penalty, o.max_len_a,
                           o.max_len_b, length_style=o.length_style, banned=NEVER_OUTPUT, penalties=o.penalties,
                           coverage_beta=o.coverage_penalty)

    def translate(self, texts: list[str], options: SearchOptions | None = None,
                  prefixes: list[str] | None = None) -> list[Translation]:
        """One Translation per text, in order; an empty or blank text gives an empty translation.
        prefixes: one target-side text per text (empty: none) that each translation starts with."""
        if prefixes is not None and len(prefixes) != len(texts):
            raise RunError(f"{len(prefixes)} prefixes for {len(texts)} texts: give one per text", "prefixes")
        options = options or self.defaults
        results = [Translation("") for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]  # empty lines stay empty, no model call
        encoded = self.encode([texts[i].strip() for i in todo])
        forced = self.target_ids([prefixes[i] for i in todo]) if prefixes is not None else None
        for i, nbest, src_ids, cut in zip(todo, self.search(encoded.ids, options, forced), encoded.ids,
                                          encoded.truncated):
            results[i] = self.result(nbest, src_ids, cut, texts[i].strip() if options.replace_unk else None)
        return results

    def score(self, texts: list[str], targets: list[str],
              options: SearchOptions | None = None) -> list[Translation]:
        """The model's score of each target given its text (sockeye-score, fairseq --score-reference):
        Translation(text=target, score=log P / lp, tokens, token_logprobs), in order."""
        if len(targets) != len(texts):
            raise RunError(f"{len(targets)} targets for {len(texts)} texts: give one per text", "targets")
        encoded = self.encode([t.strip() for t in texts])
        hyps = self.score_rows(encoded.ids, self.target_ids(targets), options)
        return [self.result([h], src_ids, cut) for h, src_ids, cut in zip(hyps, encoded.ids, encoded.truncated)]

    def result(self, nbest: list[Hypothesis], src_ids: list[int] = (), truncated: bool = False,
               source: str | None = None) -> Translation:
        """A search's hypotheses as a Translation; with the source text, every <unk> replaced by the
        source token it attends to most (--replace-unk, transformer_cli/unknowns.py)."""
        outputs = [self.output(h, src_ids, source) for h in nbest]
        best = nbest[0]
        return Translation(
            text=outputs[0][0], score=best.score, tokens=outputs[0][1], token_logprobs=best.token_logprobs,
            nbest=[(text, h.score) for (text, _), h in zip(outputs, nbest)], ids=best.without_eos(EOS_ID),
            src_ids=list(src_ids), truncated=truncated)

    def output(self, h: Hypothesis, src_ids: list[int], source: str | None = None) -> tuple[str, list[str]]:
        """A hypothesis' text and pieces, its <unk>s replaced when the source text is given."""
        pieces = [self.toks.tgt.id_to_token(i) for i in h.tokens]
        if source is None or UNK_ID not in h.tokens:
            return decode(self.toks.tgt, h.without_eos(EOS_ID)), pieces
        record = self.teacher_force(src_ids, h.tokens)
        src = source_pieces(self.toks.src, source)[: len(src_ids)]
        pieces = replaced_pieces(pieces, h.tokens, src, record.maps.cross[-1].weights[0])
        text = pieces_text(self.toks.tgt, [p for i, p in zip(h.tokens, pieces) if i >= len(SPECIALS) or i == UNK_ID])
        return text, pieces

    @torch.inference_mode()
    def teacher_force(self, src_ids: list[int], out_ids: list[int], source: str = "") -> Inspection:
        """One forward pass reading the source (ids without </s>) and the output `out_ids` (with </s>
        last when it ended), returning every attention map and the log-probabilities of each step.
        The decoder reads <s> + out_ids[:-1] (shifted right); position t produced out_ids[t]."""
        out_ids = list(out_ids) or [EOS_ID]
        body = out_ids[:-1] if out_ids[-1] == EOS_ID else out_ids
        tgt_in = [BOS_ID] + out_ids[:-1]
        logits, maps = self.model(self.tensor([src_ids]), torch.tensor([tgt_in], device=self.device),
                                  return_attention=True)
        tok_src, tok_tgt = self.toks.src.id_to_token, self.toks.tgt.id_to_token
        return Inspection(
            source=source, translation=decode(self.toks.tgt, body),
            src_tokens=[tok_src(i) for i in src_ids] + ["</s>"], tgt_in_tokens=[tok_tgt(i) for i in tgt_in],
            out_tokens=[tok_tgt(i) for i in out_ids], maps=maps, out_ids=body, src_ids=list(src_ids),
            log_probs=torch.log_softmax(logits[0].double(), dim=-1))  # (out_len, tgt_vocab)

    def inspect(self, text: str, target: str | None = None, beam_size: int = 1,
                target_ids: list[int] | None = None) -> Inspection:
        """The attention maps of `text` teacher-forced on its translation: the model's own (found with
        beam_size, so these are the weights that produced it), `target` (a given translation), or
        `target_ids` (another model's output as token ids, for comparing maps). The output always ends
        with </s>, whose row shows what the model attended to when it stopped."""
        encoded = self.encode([text.strip()])
        src_ids = encoded.ids[0]
        if target_ids is not None:
            out_ids = list(target_ids)
        elif target is None:
            out_ids = self.search([src_ids], self.options(beam_size=beam_size, n_best=1))[0][0].without_eos(EOS_ID)
        else:
            out_ids = encode_batch(self.toks.tgt, [target.strip()])[0][: self.model.config.max_len - 1]
        record = self.teacher_force(src_ids, out_ids + [EOS_ID], text.strip())
        record.truncated = encoded.truncated[0]
        return record

    def alignment(self, translation: Translation) -> str:
        """Pharaoh 'src-tgt' word pairs read from the last layer's cross-attention (see align_words)."""
        if not translation.src_ids or not translation.ids:
            return ""
        record = self.teacher_force(translation.src_ids, translation.ids + [EOS_ID])
        return " ".join(f"{s}-{t}" for t, s, _ in aligned_words(record))


def align_words(cross: torch.Tensor, src_pieces: list[str], out_pieces: list[str]
                ) -> list[tuple[int, int, float]]:
    """Word alignment from one layer's cross-attention (heads, out_len(+1), src_len(+1)), mean over
    heads: for each output word, the source word its first subword attends to most. Row t is the
    step that produced output token t. Returns (output word, source word, weight) indices."""
    weights = cross.float().mean(0)  # (out_len, src_len)
    src_words, out_words = word_index(src_pieces), word_index(out_pieces)
    pairs, seen = [], set()
    for t, w in enumerate(out_words):
        if w in seen:
            continue
        seen.add(w)
        s = int(weights[t, : len(src_pieces)].argmax())
        pairs.append((w, src_words[s], float(weights[t, s])))
    return pairs


def aligned_words(record: Inspection) -> list[tuple[int, int, float]]:
    """align_words on an Inspection's last cross-attention layer (without the </s> positions)."""
    return align_words(record.maps.cross[-1].weights[0], record.src_tokens[:-1],
                       record.out_tokens[: len(record.out_ids)])


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


def words(pieces: list[str]) -> list[str]:
    """The words the subwords make (see word_index), without the ▁ marks."""
    out: list[str] = []
    for p, w in zip(pieces, word_index(pieces)):
        if w == len(out):
            out.append(p.lstrip("▁"))
        else:
            out[w] += p
    return out


def word_alignment(record: Inspection) -> list[tuple[str, str, float]]:
    """(output word, source word, weight) of aligned_words, as text."""
    src_text, out_text = words(record.src_tokens[:-1]), words(record.out_tokens[: len(record.out_ids)])
    return [(out_text[o], src_text[s], w) for o, s, w in aligned_words(record)]
