"""translate throughput and export parity: ours against the same weights exported (by
`transformer-cli export`'s code) to Hugging Face Marian (`generate`) and to CTranslate2 (float32 and
int8), same sentences, same length-sorted batches, same threads, same run; ours in float32 and with
bfloat16 weights. Every engine runs --repeats timed passes, interleaved, each in a fresh process
(start-up and a warm-up batch not timed), and the median is reported.

Prints sentences/s (and seconds for the file) for greedy and beam 5 with the ratio to ours, the
BLEU of each engine's output on the reference, how often each engine's output is
identical to ours (greedy: the parity of the export; beam: the engines rank finished hypotheses with
their own length penalties), the largest teacher-forced logit difference of the Marian export, and
the start-up time of `echo ... | transformer-cli translate` next to `python -c "import torch"`.

    python bench/bench_translate.py --model work/m30k-small [--sentences 1000] [--threads 2] [--repeats 3]
        [--before DIR]

--before DIR: each of our engines also runs from the packages in DIR (an older revision's worktree:
`git worktree add /tmp/old 64160a9`), interleaved with the others, for a before/after ratio measured
in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEST_DE = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
TEST_EN = TEST_DE.with_name("test_2016_flickr.en.gz")


def exported(translator, fmt: str, out: Path, quantization: str | None = None) -> Path:
    """The model through transformer-cli's own exporters (what `transformer-cli export` writes)."""
    from transformer_cli.exporters import write

    out.mkdir(parents=True)
    write(translator, fmt, out, out.name, quantization)
    return out


def ct2_translate(engine, translator, ids, batch_tokens, beam, a, b) -> list[list[int]]:
    """CTranslate2 on our batches; its limit per batch is a * longest source + b, like ours."""
    groups = translator.batches(ids, batch_tokens)
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


def hf_translate(hf, translator, ids, batch_tokens, beam, a, b, alpha) -> list[list[int]]:
    groups = translator.batches(ids, batch_tokens)
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
        src = translator.tensor(translator.encode([text]).ids)
        tgt = torch.tensor([[2] + out])
        with torch.no_grad():
            mine = translator.model(src, tgt)[0]
            theirs = hf(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt).logits
        gap = max(gap, float((mine - theirs).abs().max()))
    return gap


def bleu(translator, outputs: list[list[int]], refs: list[str]) -> float:
    from data.tokenizer import decode
    from transformer_cli.scoring import score

    return score([decode(translator.toks.tgt, o) for o in outputs], refs).bleu


ENGINES = ("ours float32", "ours bfloat16", "ours int8", "ours float32 shortlist", "ours bfloat16 shortlist",
           "ours int8 shortlist", "CTranslate2 float32", "CTranslate2 int8", "HF Marian")
# load_run's precision of each of ours (else fp32); "shortlist": the model's shortlist.safetensors (translate
# --shortlist; make it first with `transformer-cli shortlist --model MODEL --data PREPARED`)
PRECISION = {"ours bfloat16": "bf16", "ours int8": "int8", "ours bfloat16 shortlist": "bf16",
             "ours int8 shortlist": "int8"}
BEFORE = " (--before)"  # the name of one of our engines run from the --before packages
A, B, ALPHA = 1.5, 10, 0.6  # length limit a * source + b, GNMT length penalty


def one_pass(args) -> None:
    """Child process: load one engine, warm it up, time one pass over the file, write ids and seconds.
    Each pass gets a process of its own: engines in one process slowed each other (two OpenMP
    runtimes, allocator state), which a fair comparison must not measure."""
    import json

    torch.set_num_threads(args.threads)
    from transformer_cli import SearchOptions, load_run
    from transformer_cli.runtime import reuse_freed_memory

    reuse_freed_memory()  # as `translate` does
    translator = load_run(args.model, precision=PRECISION.get(args.engine, "fp32"),
                          shortlist=args.engine.endswith("shortlist"))
    lines = read(TEST_DE, args.sentences)
    ids = translator.encode(lines).ids
    if args.engine.startswith("ours"):
        options = SearchOptions(args.beam, 1, ALPHA, A, B, args.batch_tokens)
        run = lambda n: [r.ids for r in translator.translate(lines[:n], options)]  # noqa: E731
    elif args.engine.startswith("CTranslate2"):
        import ctranslate2

        engine = ctranslate2.Translator(str(args.exports / f"ct2-{args.engine.split()[1]}"), device="cpu",
                                        inter_threads=1, intra_threads=args.threads)
        run = lambda n: ct2_translate(engine, translator, ids[:n], args.batch_tokens, args.beam, A, B)  # noqa: E731
    else:
        from transformers import MarianMTModel

        hf = MarianMTModel.from_pretrained(args.exports / "hf").eval()
        run = lambda n: hf_translate(hf, translator, ids[:n], args.batch_tokens, args.beam, A, B, ALPHA)  # noqa: E731
    run(16)  # warm-up
    outputs, seconds = timed(lambda: run(len(lines)))
    args.out.write_text(json.dumps({"seconds": seconds, "outputs": outputs}))


def read(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(n)]


def main() -> None:
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per engine, interleaved (median)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES)
                   + " (ours float32 always runs: it is the baseline; bfloat16 is slow where the CPU lacks it)")
    p.add_argument("--before", type=Path, help="also run our engines from the packages in this directory")
    p.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # child process
    p.add_argument("--beam", type=int, help=argparse.SUPPRESS)
    p.add_argument("--exports", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:
        return one_pass(args)
    engines = ["ours float32"] + [e for e in args.engines.split(",") if e in ENGINES and e != "ours float32"]
    unknown = [e for e in args.engines.split(",") if e not in ENGINES]
    if unknown:
        p.error(f"unknown engine(s) {unknown}: choose from {', '.join(ENGINES)}")
    if any(e.endswith("shortlist") for e in engines) and not (args.model / "shortlist.safetensors").is_file():
        p.error(f"{args.model} has no shortlist.safetensors: make it with transformer-cli shortlist --model "
                f"{args.model} --data PREPARED")
    if args.before:
        engines += [e + BEFORE for e in engines if e.startswith("ours")]
    import ctranslate2
    from transformers import MarianMTModel

    from transformer_cli import load_run

    translator = load_run(args.model)
    lines, refs = read(TEST_DE, args.sentences), read(TEST_EN, args.sentences)
    c = translator.model.config
    print(f"model {args.model}: d_model {c.d_model}, {c.n_encoder_layers}+{c.n_decoder_layers} layers, "
          f"vocab {c.tgt_vocab_size}; {len(lines)} sentences of {TEST_DE.name}; torch {torch.__version__}, "
          f"ctranslate2 {ctranslate2.__version__}, {args.threads} threads; each pass in a fresh process "
          f"(start-up and warm-up not timed), median of {args.repeats} interleaved passes")
    with tempfile.TemporaryDirectory() as tmp:
        exports = Path(tmp)
        exported(translator, "hf", exports / "hf")
        for q in ("float32", "int8"):
            exported(translator, "ctranslate2", exports / f"ct2-{q}", q)

        def child(engine: str, beam: int) -> tuple[list[list[int]], float]:
            out = exports / "pass.json"
            env = dict(os.environ)
            if engine.endswith(BEFORE):  # the same engine, importing the older packages first
                engine = engine.removesuffix(BEFORE)
                env["PYTHONPATH"] = os.pathsep.join([str(args.before.resolve()), env.get("PYTHONPATH", "")])
            subprocess.run([sys.executable, __file__, "--model", str(args.model), "--sentences", str(args.sentences),
                            "--threads", str(args.threads), "--batch-tokens", str(args.batch_tokens),
                            "--engine", engine, "--beam", str(beam), "--exports", str(exports), "--out", str(out)],
                           check=True, capture_output=True, env=env)
            result = json.loads(out.read_text())
            return result["outputs"], result["seconds"]

        for beam in (1, 5):
            times: dict[str, list[float]] = {e: [] for e in engines}
            outputs: dict[str, list[list[int]]] = {}
            for repeat in range(args.repeats):
                for engine in engines:
                    if engine == "HF Marian" and repeat:
                        continue  # once: slow, and not a target
                    outputs[engine], t = child(engine, beam)
                    times[engine].append(t)
            ours = statistics.median(times["ours float32"])
            print(f"{'greedy' if beam == 1 else f'beam {beam}'}:")
            for name, ts in times.items():
                t = statistics.median(ts)
                agree = sum(x == y for x, y in zip(outputs["ours float32"], outputs[name])) / len(lines)
                print(f"  {name:31s} {len(lines) / t:6.1f} sent/s ({t:5.2f} s; {', '.join(f'{x:.2f}' for x in ts)}) "
                      f"| speed of ours float32 / this {t / ours:4.2f} | identical to ours float32 {agree:6.1%} | "
                      f"BLEU {bleu(translator, outputs[name], refs):5.2f}")
            if beam == 1 and "HF Marian" in engines:
                hf = MarianMTModel.from_pretrained(exports / "hf").eval()
                print(f"  largest logit difference ours vs exported Marian (first 50 sentences, teacher-forced): "
                      f"{logit_gap(translator, hf, lines[:50], outputs['ours float32'][:50]):.2e}")
    cli, torch_only = startup(args.model)
    print(f"start-up: echo ... | transformer-cli translate {cli:.2f} s; python -c 'import torch' {torch_only:.2f} s")


if __name__ == "__main__":
    main()
