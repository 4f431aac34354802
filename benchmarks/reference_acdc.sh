#!/usr/bin/env bash
# The reference run on ACDC at 64x64, end to end, with the project's own commands only.
#
#   benchmarks/reference_acdc.sh                    # every stage; each one skips what is already done
#   RUN=runs/acdc64 THREADS=2 KIMG=150 benchmarks/reference_acdc.sh
#   STAGES="bench report" benchmarks/reference_acdc.sh
#
# Stages (RUN defaults to runs/acdc64, which git ignores; ACDC to ../shared/data/acdc):
#   train     StyleGAN2-ADA, preset cpu-small, on ACDC train/ images until KIMG thousand images
#             (resumes from the newest snapshot; FID of 500 images at every 8 kimg snapshot)
#   annotator a U-Net trained on all ACDC train/ masks and scored on test/: the model-assisted labeller
#   annotate  30 diverse seeds labelled by that annotator (recorded as model-made)
#   interpret the style interpreter (10 pixel classifiers) trained on those 30 masks
#   generate  1,500 training pairs (seeds 0..1499) and 300 test-G pairs (seeds 1,000,000..)
#   fid       FID of 2,000 generated images against ACDC train/ (pytorch-fid's Frechet distance)
#   grade     good / partial / bad share of the 1,500 pairs against the annotator
#   bench     DeepLabV3, FCN, U-Net on synthetic (1,500), real (500 slices) and hybrid (1,500 + 30 real),
#             5 folds grouped by patient, scored on test-R (ACDC test/) and test-G; the same number of
#             training steps per fold for every set
#             (SYNTH_EPOCHS, default 7, sets the synthetic and hybrid epochs)
#   report    the "Reference run on ACDC" section of benchmarks/RESULTS.md (benchmarks/reference_acdc.py)
set -euo pipefail
cd "$(dirname "$0")/.."

DG=${DATASETGAN:-datasetgan}
ACDC=${ACDC:-../shared/data/acdc}
RUN=${RUN:-runs/acdc64}
THREADS=${THREADS:-1}
KIMG=${KIMG:-200}
PYTHON=${PYTHON:-python}
STAGES=${STAGES:-train annotator annotate interpret generate fid grade bench report}
export OMP_NUM_THREADS=$THREADS
log() { printf '\n== %s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }

if want train; then
    log "train: cpu-small with ADA to $KIMG kimg"
    if ls "$RUN/training/"snapshot-* >/dev/null 2>&1; then resume=--resume; else resume=; fi
    $DG train "$ACDC/train" --out "$RUN" --preset cpu-small --aug ada --kimg "$KIMG" --snap 8 --fid 500 \
        --log-kimg 1 --threads "$THREADS" --keep 2 --no-progress $resume
fi
if want annotator && [ ! -f "$RUN/annotator.safetensors" ]; then
    log "annotator: U-Net on every ACDC train/ mask"
    $DG bench "$RUN" --real "$ACDC/train" --test-real "$ACDC/test" --real-limit all \
        --train-annotator "$RUN/annotator.safetensors" --annotator-model unet --threads "$THREADS" --no-progress
fi
if want annotate; then
    log "annotate: 30 diverse seeds by the annotator"
    $DG annotate "$RUN" --n 30 --diverse --labels "$ACDC/labels.json" --auto "$RUN/annotator.safetensors" --no-serve
fi
if want interpret && [ ! -f "$RUN/interpreter.safetensors" ]; then
    log "interpret: 10 pixel classifiers on the 30 masks"
    $DG interpret "$RUN" --threads "$THREADS" 2>"$RUN/interpret.err" || { tr '\r' '\n' <"$RUN/interpret.err" | tail -5; exit 1; }
fi
if want generate; then
    log "generate: 1,500 training pairs and 300 test-G pairs"
    [ -f "$RUN/generated/train/manifest.json" ] || $DG generate "$RUN" --n 1500 --seed-start 0 --out "$RUN/generated/train" --threads "$THREADS"
    [ -f "$RUN/generated/test/manifest.json" ] || $DG generate "$RUN" --n 300 --seed-start 1000000 --out "$RUN/generated/test" --threads "$THREADS"
fi
if want fid; then
    log "fid: 2,000 generated images against ACDC train/"
    $DG fid "$RUN" "$ACDC/train" --n 2000 --threads "$THREADS" --json | tee "$RUN/fid.json"
fi
if want grade; then
    log "grade: the 1,500 pairs against the annotator"
    $DG bench "$RUN" --grade "$RUN/generated/train" --grade-reference "$RUN/annotator.safetensors" --grade-n 1500 \
        --threads "$THREADS" --no-progress
fi
if want bench; then
    # Equal compute per fold: 20 epochs over the ~400 real slices of a fold are ~1,000 steps of 8, and so
    # are SYNTH_EPOCHS=7 epochs over the ~1,200 synthetic pairs of a fold (20 would cost 3x as much).
    log "bench: 3 models x synthetic / real / hybrid x 5 folds"
    common=(--test-generated "$RUN/generated/test" --real "$ACDC/train" --test-real "$ACDC/test"
            --fold-groups 'patient\d+' --threads "$THREADS" --no-progress)
    $DG bench "$RUN" --sets real "${common[@]}"
    $DG bench "$RUN" --synthetic "$RUN/generated/train" --sets synthetic,hybrid --epochs "${SYNTH_EPOCHS:-7}" "${common[@]}"
fi
if want report; then
    log "report: benchmarks/RESULTS.md"
    $PYTHON benchmarks/reference_acdc.py "$RUN"
fi
log "done: $RUN/bench/tables.md"
