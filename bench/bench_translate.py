"""translate throughput and export parity: ours against the same weights exported (by
`transformer-cli export`'s code) to Hugging Face Marian (`generate`) and to CTranslate2 (float32 and
int8), same sentences, same length-sorted batches, same threads, same run.

Prints sentences/s for greedy and beam 5 with the ratio to ours, how often each engine's output is
identical to ours (greedy: the parity of the export; beam: the engines rank finished hypotheses with
their own length penalties), the largest teacher-forced logit difference of the Marian export, and
the start-up time of `echo ... | transformer-cli translate` next to `python -c "import torch"`.

    python bench/bench_translate.py --model work/m30k-small [--sentences 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEST_DE = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"


def exported(translator, fmt: str, out: Path, quantization: str | None = None) -> Path:
    """The model through transformer-cli's own exporters (what `transformer-cli export` writes)."""
    from transformer_cli.exporters import write

    out.mkdir(parents=True)
    write(translator, fmt, out, out.name, quantization)
    return out


def ct2_translate(engine, translator, ids, groups, beam, a, b) -> list[list[int]]:
    """CTranslate2 on the same batches; its limit per batch is a * longest source + b, like ours."""
    vocab = [translator.toks.src.id_to_token(i) for i in range(translator.toks.src.get_vocab_size())]
    out: list[list[int]] = [[] for _ in ids]
    for group in groups:
        source = [[vocab[i] for i in ids[g]] + ["</s>"] for g in group]
        longest = max(len(s) for s in source)
        results = engine.translate_batch(source, beam_size=beam, max_decoding_length=int(a * longest + b),
                                          max_batch_size=0, return_scores=False)
        for g, r in zip(group, results):
            out[g] = [translator.toks.tgt.token_to_id(t) for t in r.hypotheses[0]]
    return out


def hf_translate(hf, translator, ids, groups, beam, a, b, alpha) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in ids]
    for group in groups:
        src = translator.tensor([ids[g] for g in group])
        mask = (src != 0).long()
        longest = int(mask.sum(1).max())
        with torch.inference_mode():
            gen = hf.generate(input_ids=src, attention_mask=mask, num_beams=beam, do_sample=False,
                              max_new_tokens=int(a * longest + b), length_penalty=alpha, early_stopping=True,
                              num_return_sequences=1)
        for g, row in zip(group, gen.tolist()):
            row = row[1:]  # drop the start token
            out[g] = row[: row.index(3)] if 3 in row else row
    return out


def startup(model_dir: Path, repeats: int = 3) -> tuple[float, float]:
    exe = Path(sys.executable).with_name("transformer-cli")
    def wall(cmd, stdin=None):
        t0 = time.perf_counter()
        subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True)
        return time.perf_counter() - t0
    cli = [wall([str(exe), "translate", "--model", str(model_dir)], "Ein Mann fährt Fahrrad.\n")
           for _ in range(repeats)]
    torch_only = [wall([sys.executable, "-c", "import torch"]) for _ in range(repeats)]
    return statistics.median(cli), statistics.median(torch_only)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def logit_gap(translator, hf, lines: list[str], outputs) -> float:
    """Largest |logit difference| between ours and the exported Marian model, teacher-forced."""
    gap = 0.0
    for text, out in zip(lines, outputs):
        src = translator.tensor(translator.encode([text]))
        tgt = torch.tensor([[2] + out.ids])
        with torch.no_grad():
            mine = translator.model(src, tgt)[0]
            theirs = hf(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt).logits
        gap = max(gap, float((mine - theirs).abs().max()))
    return gap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=4000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import ctranslate2
    from transformers import MarianMTModel

    from transformer_cli import SearchOptions, load_run
    from transformer_cli.runtime import reuse_freed_memory

    reuse_freed_memory()  # as `translate` does
    translator = load_run(args.model)
    with gzip.open(TEST_DE, "rt", encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(args.sentences)]
    ids = translator.encode(lines)
    groups = translator.batches(ids, args.batch_tokens)
    a, b, alpha = 1.5, 10, 0.6
    c = translator.model.config
    print(f"model {args.model}: d_model {c.d_model}, {c.n_encoder_layers}+{c.n_decoder_layers} layers, "
          f"vocab {c.tgt_vocab_size}; {len(lines)} sentences of {TEST_DE.name}; torch {torch.__version__}, "
          f"ctranslate2 {ctranslate2.__version__}, {args.threads} threads, float32 unless stated")
    with tempfile.TemporaryDirectory() as tmp:
        hf = MarianMTModel.from_pretrained(exported(translator, "hf", Path(tmp) / "hf")).eval()
        engines = {q: ctranslate2.Translator(str(exported(translator, "ctranslate2", Path(tmp) / f"ct2-{q}", q)),
                                             device="cpu", inter_threads=1, intra_threads=args.threads)
                   for q in ("float32", "int8")}
        for beam in (1, 5):
            options = SearchOptions(beam, 1, alpha, a, b, args.batch_tokens)
            translator.translate(lines[:16], options)  # warm-up
            ours, t_ours = timed(lambda: translator.translate(lines, options))
            name = "greedy" if beam == 1 else f"beam {beam}"
            print(f"{name}: ours {len(lines) / t_ours:7.1f} sent/s ({t_ours:.2f} s)")
            hf_out, t_hf = timed(lambda: hf_translate(hf, translator, ids, groups, beam, a, b, alpha))
            runs = [("HF Marian (exported)", hf_out, t_hf)]
            for q, engine in engines.items():
                ct2_translate(engine, translator, ids[:16], translator.batches(ids[:16], args.batch_tokens), beam, a, b)
                out, t = timed(lambda: ct2_translate(engine, translator, ids, groups, beam, a, b))
                runs.append((f"CTranslate2 {q} (exported)", out, t))
            for label, out, t in runs:
                agree = sum(r.ids == h for r, h in zip(ours, out)) / len(lines)
                print(f"  {label:28s} {len(lines) / t:7.1f} sent/s | ours / theirs {t / t_ours:.2f} | "
                      f"identical outputs {agree:.1%}")
            if beam == 1:
                print(f"  largest logit difference ours vs exported Marian (first 50 sentences, teacher-forced): "
                      f"{logit_gap(translator, hf, lines[:50], ours[:50]):.2e}")
    cli, torch_only = startup(args.model)
    print(f"start-up: echo ... | transformer-cli translate {cli:.2f} s; python -c 'import torch' {torch_only:.2f} s")


if __name__ == "__main__":
    main()
