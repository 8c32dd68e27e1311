#!/usr/bin/env bash
# The README's real-data recipe end to end, scored the strict way (issue 10):
#   prepare Multi30k with prepare's defaults -> train --preset small --max-time BUDGET (nothing else)
#   -> translate validation and test_2016_flickr with translate's defaults (and greedy) -> sacreBLEU.
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
score() {  # split search-name translate-flags...
  local split=$1 name=$2; shift 2
  local ref="$OUT/$split.$TGT" hyp="$OUT/$split.$name.$TGT"
  gzip -dc "$DATA/$split.$TGT.gz" > "$ref"
  local start=$SECONDS
  gzip -dc "$DATA/$split.$SRC.gz" | "$CLI" translate --model "$RUN" "$@" > "$hyp"
  local secs=$((SECONDS - start))
  local bleu lc chrf
  bleu=$("$BIN/sacrebleu" "$ref" -i "$hyp" -m bleu -b -w 2)
  lc=$("$BIN/sacrebleu" "$ref" -i "$hyp" -m bleu -lc -b -w 2)
  chrf=$("$BIN/sacrebleu" "$ref" -i "$hyp" -m chrf -b -w 2)
  printf '| %s | %s | %s | %s | %s | %s s |\n' "$split" "$name" "$bleu" "$lc" "$chrf" "$secs"
}

"$BIN/python" - "$RUN" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
events = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
evals = [e for e in events if e["event"] == "eval"]
trains = [e for e in events if e["event"] == "train"]
last, best = evals[-1], max(evals, key=lambda e: e["bleu"])
cfg = json.loads((run / "config.json").read_text())["training"]
print(f"{run}: {last['step']:,} steps in {trains[-1]['elapsed'] / 60:.1f} min of training, epoch {last['epoch']}; "
      f"validation BLEU (greedy, {cfg['eval_samples'] or 'all'} sentences) last {last['bleu']:.2f}, "
      f"best {best['bleu']:.2f} at step {best['step']:,}")
EOF
echo "| split | search | BLEU | BLEU lowercased | chrF | time |"
echo "|---|---|---|---|---|---|"
score val beam-default
score test_2016_flickr beam-default
score test_2016_flickr greedy --beam-size 1
echo "BLEU signature: $("$BIN/sacrebleu" "$OUT/test_2016_flickr.$TGT" -i "$OUT/test_2016_flickr.beam-default.$TGT" -m bleu | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["signature"])')"
echo "chrF signature: $("$BIN/sacrebleu" "$OUT/test_2016_flickr.$TGT" -i "$OUT/test_2016_flickr.beam-default.$TGT" -m chrf | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["signature"])')"
