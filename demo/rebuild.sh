#!/usr/bin/env bash
# Rebuild the bundled demo run (demo/run/) from nothing, with the project's own commands only.
#
#   demo/rebuild.sh                 # about an hour on one CPU thread; resumes where it stopped
#   WORK=/tmp/demo-build THREADS=2 demo/rebuild.sh
#
# Steps (every intermediate file goes to $WORK, default build/demo, which git ignores):
#   1. phantom data: 1000 training slices (seed 0) and 200 held-out slices (seed 1), 32x32, with masks
#   2. the generator: StyleGAN2-ADA, preset cpu-demo (32x32, 16..64 channels), 60k images shown
#   3. the annotator: a small U-Net trained on the phantom's real masks, scored on the held-out slices
#   4. 30 generated seeds labelled by that annotator (model-assisted annotation, recorded as model-made)
#   5. the style interpreter (10 pixel classifiers) trained on those 30 masks
#   6. generator + interpreter + the annotation set (30 images, masks, records) copied to demo/run/
#   7. a check: 16 pairs generated from demo/run/ and graded against the annotator
#
# Needs `datasetgan` on PATH (pip install -e .) or DATASETGAN="python -m datasetgan" from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."

DG=${DATASETGAN:-datasetgan}
WORK=${WORK:-build/demo}
THREADS=${THREADS:-1}
KIMG=${KIMG:-60}
RES=32
export OMP_NUM_THREADS=$THREADS

mkdir -p "$WORK"
log() { printf '\n== %s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }

log "1. phantom data"
[ -f "$WORK/phantom/labels.json" ] || $DG demo --make-data "$WORK/phantom" --n 1000 --resolution $RES --seed 0
[ -f "$WORK/phantom-test/labels.json" ] || $DG demo --make-data "$WORK/phantom-test" --n 200 --resolution $RES --seed 1

log "2. generator ($KIMG kimg)"
if ls "$WORK/run/training/"snapshot-* >/dev/null 2>&1; then resume=--resume; else resume=; fi
$DG train "$WORK/phantom" --out "$WORK/run" --preset cpu-demo --kimg "$KIMG" --snap 5 --fid 0 \
    --threads "$THREADS" --no-progress $resume

log "3. annotator (U-Net on the phantom's real masks)"
[ -f "$WORK/annotator.safetensors" ] || $DG bench "$WORK/run" --real "$WORK/phantom" --test-real "$WORK/phantom-test" \
    --train-annotator "$WORK/annotator.safetensors" --annotator-model unet --resolution $RES --real-limit all \
    --threads "$THREADS" --no-progress

log "4. 30 seeds annotated by the annotator"
$DG annotate "$WORK/run" --n 30 --diverse --labels "$WORK/phantom/labels.json" --auto "$WORK/annotator.safetensors" --no-serve

log "5. interpreter"
# (its progress bars go to $WORK/interpret.err; per-epoch losses to $WORK/run/interpret/log.jsonl)
if ! $DG interpret "$WORK/run" --threads "$THREADS" 2>"$WORK/interpret.err"; then
    tr '\r' '\n' <"$WORK/interpret.err" | tail -5; exit 1
fi

log "6. copy to demo/run"
rm -rf demo/run.new && mkdir -p demo/run.new/annotations
cp "$WORK/run/generator.safetensors" "$WORK/run/generator.json" \
   "$WORK/run/interpreter.safetensors" "$WORK/run/interpreter.json" demo/run.new/
cp "$WORK/run/annotations/labels.json" "$WORK/run/annotations/"seed_* demo/run.new/annotations/
[ -f "$WORK/run/training/log.jsonl" ] && cp "$WORK/run/training/log.jsonl" demo/run.new/training-log.jsonl
rm -rf demo/run && mv demo/run.new demo/run
du -sh demo/run

log "7. check: 16 pairs from demo/run, graded against the annotator"
rm -rf "$WORK/check"
$DG generate demo/run --n 16 --out "$WORK/check" --threads "$THREADS"
$DG bench "$WORK/run" --grade "$WORK/check" --grade-reference "$WORK/annotator.safetensors" --grade-n 16 \
    --resolution $RES --threads "$THREADS" --no-progress || true
log "done: demo/run rebuilt; try: $DG demo"
