#!/usr/bin/env bash
# The README's real-data recipe end to end, scored the strict way (issue 10):
#   prepare Multi30k with prepare's defaults -> train --preset small --max-time BUDGET (nothing else)
#   -> translate validation and test_2016_flickr with translate's defaults (and greedy) -> sacreBLEU.
#   translate's defaults include the length penalty the run chose on validation (RUN/search.json).
# Usage: bash bench/quality.sh [BUDGET] [DIRECTION] [WORK]
#   BUDGET     --max-time of the run: 40m (default), 1h30m, 90s or seconds
#   DIRECTION  de-en (default) or en-de
#   WORK       where the prepared data and the run go (default work/quality)
# Environment: BIN (default .venv/bin, made by `make install` when missing), DATA (default
# ../shared/data/multi30k). A run directory that already holds a model is scored again, not retrained.
# Run it on an idle machine: the budget is wall-clock time, so anything else running costs steps.
set -euo pipefail
BUDGET=${1:-40m}
DIRECTION=${2:-de-en}
WORK=${3:-work/quality}
BIN=${BIN:-.venv/bin}
DATA=${DATA:-../shared/data/multi30k}
case "$DIRECTION" in
  de-en) SRC=de TGT=en ;;
  en-de) SRC=en TGT=de ;;
  *) echo "error: DIRECTION must be de-en or en-de, got '$DIRECTION'" >&2; exit 2 ;;
esac
[ -x "$BIN/transformer-cli" ] || make install >/dev/null
CLI="$BIN/transformer-cli"
PREP="$WORK/m30k-$SRC-$TGT"
RUN="$WORK/$SRC-$TGT-$BUDGET"
OUT="$RUN/scores"

[ -f "$PREP/prepare.json" ] || "$CLI" prepare --dataset "$DATA" --src "$SRC" --tgt "$TGT" --out "$PREP"
if [ -f "$RUN/model.safetensors" ]; then
  echo "$RUN already holds a trained model: scoring it again (remove the directory to retrain)"
else
  "$CLI" train --data "$PREP" --out "$RUN" --preset small --max-time "$BUDGET" </dev/null
fi

mkdir -p "$OUT"
ROWS=()
translate() {  # split search-name translate-flags...: writes $OUT/split.TGT (reference) and split.name.TGT
  local split=$1 name=$2; shift 2
  gzip -dc "$DATA/$split.$TGT.gz" > "$OUT/$split.$TGT"
  local start=$SECONDS
  gzip -dc "$DATA/$split.$SRC.gz" | "$CLI" translate --model "$RUN" "$@" > "$OUT/$split.$name.$TGT"
  ROWS+=("$split" "$name" "$((SECONDS - start))")
}
translate val beam-default
translate test_2016_flickr beam-default
translate test_2016_flickr greedy --beam-size 1

"$BIN/python" - "$RUN" "$TGT" "${ROWS[@]}" <<'EOF'
import json
import sys
from pathlib import Path

from transformer_cli.metrics import best_from_metrics, read_metrics
from transformer_cli.scoring import score
from transformer_cli.search_defaults import SEARCH_FILE, options_for

run, tgt, rows = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
events = read_metrics(run)[0]
last = [e for e in events if e["event"] == "eval"][-1]
elapsed = [e for e in events if e["event"] == "train"][-1]["elapsed"]
best = best_from_metrics(run)
samples = json.loads((run / "config.json").read_text())["training"]["eval_samples"]
print(f"{run}: {last['step']:,} steps in {elapsed / 60:.1f} min of training, epoch {last['epoch']}; "
      f"validation BLEU (greedy, {samples or 'all'} sentences) last {last['bleu']:.2f}, "
      f"best {best['bleu']:.2f} at step {best['step']:,}")
search = run / SEARCH_FILE  # the length penalty train chose on validation: translate's default for the run
if search.is_file():
    used = options_for([run])  # what translate searched with: the file read and checked as translate reads it
    print(f"{SEARCH_FILE}: length penalty {used.length_penalty:g} ({used.length_style}), "
          f"validation BLEU by penalty {json.loads(search.read_text()).get('chosen', {}).get('bleu')}")
print("| split | search | BLEU | BLEU lowercased | chrF | time |\n|---|---|---|---|---|---|")
for split, name, secs in zip(rows[::3], rows[1::3], rows[2::3]):
    refs, hyps = ((run / "scores" / f).read_text(encoding="utf-8").splitlines()
                  for f in (f"{split}.{tgt}", f"{split}.{name}.{tgt}"))
    s = score(hyps, refs)
    print(f"| {split} | {name} | {s.bleu:.2f} | {s.bleu_lowercase:.2f} | {s.chrf:.2f} | {secs} s |")
print(f"BLEU signature: {s.bleu_signature}")
print(f"chrF signature: {s.chrf_signature}")
EOF
