"""Where `translate`'s time goes: the torch profiler's operator table for one pass over the test
file (CPU time by operator, self time, share of the total), plus the Python left outside operators.

    python bench/profile_translate.py --model work/m30k-small [--beam 5] [--sentences 1000]
        [--precision fp32|bf16|int8] [--shortlist] [--threads 2] [--rows 15] [--code DIR] [--live N]

--live N profiles serve's continuous beam search instead of translate's batches: one BeamSession
kept at N live sentences (a new one joins the step after one ends, as serve's model worker admits
single-sentence requests), without HTTP.

--code DIR profiles the packages in DIR instead (an older revision's worktree: `git worktree add
/tmp/old 87bb699`), for a before/after table.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
TEST_DE = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--code", type=Path, help="import transformer_cli from this directory")
    p.add_argument("--live", type=int, default=0, help="profile a session kept at N live sentences")
    p.add_argument("--shortlist", action="store_true", help="decode over the model's shortlist.safetensors")
    args = p.parse_args()
    if args.code:
        sys.path.insert(0, str(args.code.resolve()))
    torch.set_num_threads(args.threads)
    from transformer_cli import SearchOptions, load_run
    from transformer_cli.runtime import reuse_freed_memory

    reuse_freed_memory()
    translator = load_run(args.model.resolve(), precision=args.precision, shortlist=args.shortlist)
    with gzip.open(TEST_DE, "rt", encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(args.sentences)]
    options = SearchOptions(beam_size=args.beam)
    run = (lambda texts: live_session(translator, texts, options, args.live)) if args.live else \
        (lambda texts: translator.translate(texts, options))
    run(lines[:16])  # warm-up
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(lines)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    ops = sum(e.self_cpu_time_total for e in events) / 1e6
    mode = f"{args.live} live" if args.live else "translate's batches"
    mode += ", shortlist" if args.shortlist else ""
    print(f"{args.model} beam {args.beam} {args.precision}, {mode}, {len(lines)} sentences, {args.threads} threads: "
          f"{wall:.2f} s under the profiler, {ops:.2f} s inside torch operators, "
          f"{max(wall - ops, 0):.2f} s ({max(wall - ops, 0) / wall:.0%}) Python and the rest")
    print(f"{'operator':40s} {'calls':>8s} {'self s':>8s} {'share':>7s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        print(f"{e.key[:40]:40s} {e.count:8d} {e.self_cpu_time_total / 1e6:8.2f} "
              f"{e.self_cpu_time_total / 1e6 / wall:7.1%}")


def live_session(translator, lines: list[str], options, live: int) -> None:
    """serve's continuous beam search over `lines`: `live` sentences searched at once, each one that
    ends replaced by the next line (one admit per sentence, as single-sentence requests join)."""
    rows = translator.encode(lines).ids
    session = translator.beam_session(options)
    waiting = list(range(len(rows)))[::-1]
    with torch.inference_mode():
        while waiting or session.live:
            while waiting and session.live < live:
                i = waiting.pop()
                session.admit(translator.tensor([rows[i]]), [i])
            session.step()


if __name__ == "__main__":
    main()
