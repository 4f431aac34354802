#!/usr/bin/env bash
# The reference run on ACDC, end to end, with the project's own commands only: one generator, and three
# labelling arms of 30 / 30 / 60 annotations compared on the same folds and the same steps per fold.
#
#   benchmarks/reference_acdc.sh                    # every stage; each one skips what is already done
#   RUN=runs/acdc64 THREADS=2 KIMG=150 benchmarks/reference_acdc.sh
#   STAGES="arms report" ARMS="real" benchmarks/reference_acdc.sh
#
# Shared stages (RUN defaults to runs/acdc64, which git ignores; ACDC to ../shared/data/acdc):
#   train     StyleGAN2-ADA, preset cpu-small, on ACDC train/ images until KIMG thousand images
#             (resumes from the newest snapshot; FID of 500 images at every 8 kimg snapshot)
#   annotator a U-Net trained on all ACDC train/ masks and scored on test/: the model-assisted labeller
#   fid       FID of N_FID (2,000) generated images against ACDC train/ (pytorch-fid's Frechet distance)
#   pick      N_REAL (30) ACDC train/ slices with their expert masks, one per patient in a seeded random
#             order (RUN/real/train), and N_VAL ACDC val/ slices the same way (RUN/real/val): folders of links,
#             nothing copied. N_VAL defaults to all 210 (10 patients): projecting them costs ~45 min of a run of
#             8-11 h (see below), and a subset would only add sampling noise to a measure over 10 patients
#   project   both projected into the generator once (RUN/projected/train, RUN/projected/val; PROJECT_STEPS
#             steps, the projector's defaults otherwise), shared by the arms
# Per arm (RUN/arms/ARM, a run folder whose generator links to RUN's; ARMS="seeds real both"):
#   seeds     30 diverse generated seeds labelled by the annotator (recorded as model-made), as the first run
#   real      the N_REAL real slices, imported with their expert masks and stored projections
#   both      both (60 annotations)
#   then: interpret (10 pixel classifiers), generate (N_TRAIN=1,500 training pairs, seeds 0.., and N_TEST=300
#   test-G pairs, seeds 1,000,000..), grade (the 1,500 pairs against the annotator), agreement (the
#   interpreter's masks of the projected val slices against their expert masks: `datasetgan bench
#   agreement`), bench (MODELS on the synthetic set and the hybrid set = the pairs + the N_REAL real slices,
#   FOLDS folds grouped by patient, SYNTH_EPOCHS epochs, scored on test-R = ACDC test/ and the arm's test-G)
# Then, shared again:
#   real      MODELS on 500 real ACDC train/ slices (REAL_EPOCHS epochs, same folds), trained once and scored on
#             test-R and on every arm's test-G (`--test-generated ARM=...`: the test-G masks differ by arm, each
#             arm's from its own interpreter); the report gives each arm's real rows on that arm's test-G.
#             An arm whose test-G exists only later: rerun this stage (its folds are trained again, same seeds)
#   report    the "Second reference run on ACDC (labelling arms)" section of REPORT_TO/RESULTS.md and
#             REPORT_TO/results/reference_acdc.json (REPORT_TO: benchmarks/; benchmarks/reference_acdc.py)
# Equal compute per fold: 20 epochs over the ~400 real slices of a fold are ~1,000 steps of 8, and so are
# SYNTH_EPOCHS=7 epochs over the ~1,200 synthetic pairs of a fold, as in the first run.
# Every stage appends its wall time and the load average to RUN/timings.tsv.
#
# Against the first run (RESULTS.md "Reference run on ACDC (end to end)"): same folds (5, grouped by patient,
# seed 0), same steps per fold, same 500 real slices; the hybrid sets' 30 real slices are now the picked ones
# (arm `real`'s annotations) instead of 30 drawn at random from ACDC train.
#
# Size knobs (defaults: the full run; in brackets: the tiny validation of 2026-11-29, /work/runs/s16-tiny):
#   N_REAL=30 [4]  N_VAL=all [6]  PROJECT_STEPS=300 [20]  N_TRAIN=1500 [40]  N_TEST=300 [12]  N_FID=2000 [64]
#   N_GRADE=N_TRAIN  FOLDS=5 [2]  MODELS=deeplabv3,fcn,unet [unet]  REAL_EPOCHS=20 [1]  SYNTH_EPOCHS=7 [1]
#   REAL_LIMIT=500 [40]  ANNOTATOR_LIMIT=all [40]  ANNOTATOR_EPOCHS=20 [1]
#   INTERPRET_ARGS="" ["--members 2 --epochs 1 --pixels-per-epoch 20000"]   REPORT_TO=benchmarks [run's report/]
#
# Cost of the full run on the cpu-small 64 px generator, from stage times measured on 2026-11-29 at 1 thread,
# nice 10, load average ~4 on the 2 cores (/work/runs/s16-tiny64: the same stages on a random-weight cpu-small
# generator; /work/runs/s16-tiny64/threads.log: 1 vs 2 threads, interleaved in one process):
#   annotator  3,280 U-Net steps x 0.065 s                                            ~  4 min
#   fid        3,312 Inception images x 0.2 s (274 s for 1,376 images measured)       ~ 11 min
#   project    (4 + 27 batches of 8) x 300 steps x 0.33 s  (train 30: 7 min, val 210: 45 min)   ~ 52 min
#   per arm    interpret <= 10 members x 10 epochs x 108 steps / 35 steps/s (5 min; 10 for `both`),
#              generate 1,800 pairs / 7.3 per s (4 min), grade + agreement (~2 min)     ~ 40 min for 3 arms
#   bench      7 sets (3 arms x synthetic + hybrid, 1 real) x 5 folds x ~1,050 steps x (0.50 + 0.35 + 0.065) s
#              for DeepLabV3 + FCN + U-Net = 80 min a set under this load (53 min a set at the idle-machine
#              figures of datasetgan/bench/profiles.py)                                 6.2-9.3 h
#   total at 1 thread: about 8 to 11 hours (the bench is 80 %; the annotator's U-Net is trained again, since the
#   first run's folder is gone). At 2 threads: each step measured 2.7x (FCN) to 9.8x (projector) SLOWER than at
#   1 thread while the machine was loaded (threads spin-wait); only on an otherwise idle machine do 2 threads help
#   (about 0.6x the 1-thread time for the bench, profiles.py: ~5 h in all). With other work running, use
#   THREADS=1, and to use both cores run the arms as two 1-thread processes once the shared stages are done
#   (STAGES=arms ARMS=seeds ... & STAGES=arms ARMS="real both" ...; then STAGES="real report").
#
# Launch on the #15 generator (GEN: its run folder; the train stage is skipped, the generator is copied):
#   mkdir -p /work/runs/acdc64-ref3 && cp $GEN/generator.safetensors $GEN/generator.json /work/runs/acdc64-ref3/
#   cd /work/main && RUN=/work/runs/acdc64-ref3 ACDC=/work/shared/data/acdc THREADS=1 \
#     DATASETGAN=/work/main/.venv/bin/datasetgan PYTHON=/work/main/.venv/bin/python \
#     STAGES="annotator fid pick project arms real report" \
#     nohup nice -n 5 benchmarks/reference_acdc.sh > /work/runs/acdc64-ref3/log 2>&1 &
# Rerun the same command after a kill: finished stages are skipped, `project` keeps its finished batches of 8
# (~2 min each) and the benchmark its finished folds.
set -euo pipefail
cd "$(dirname "$0")/.."

DG=${DATASETGAN:-datasetgan}
ACDC=${ACDC:-../shared/data/acdc}
RUN=${RUN:-runs/acdc64}
THREADS=${THREADS:-1}
KIMG=${KIMG:-200}
PYTHON=${PYTHON:-python}
STAGES=${STAGES:-train annotator fid pick project arms real report}
ARMS=${ARMS:-seeds real both}
N_REAL=${N_REAL:-30}
N_VAL=${N_VAL:-all}
PROJECT_STEPS=${PROJECT_STEPS:-300}
N_TRAIN=${N_TRAIN:-1500}
N_TEST=${N_TEST:-300}
N_FID=${N_FID:-2000}
N_GRADE=${N_GRADE:-$N_TRAIN}
FOLDS=${FOLDS:-5}
MODELS=${MODELS:-deeplabv3,fcn,unet}
REAL_EPOCHS=${REAL_EPOCHS:-20}
SYNTH_EPOCHS=${SYNTH_EPOCHS:-7}
REAL_LIMIT=${REAL_LIMIT:-500}
ANNOTATOR_LIMIT=${ANNOTATOR_LIMIT:-all}
ANNOTATOR_EPOCHS=${ANNOTATOR_EPOCHS:-20}
INTERPRET_ARGS=${INTERPRET_ARGS:-}
REPORT_TO=${REPORT_TO:-benchmarks}
GROUPS_RE='patient\d+'
export OMP_NUM_THREADS=$THREADS
mkdir -p "$RUN"
log() { printf '\n== %s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { # timed NAME COMMAND...: run it, then append its wall time and the load average to RUN/timings.tsv
    local name=$1 t0=$SECONDS
    shift
    "$@"
    printf '%s\t%s\t%d\t%s\n' "$(date -u +%FT%TZ)" "$name" $((SECONDS - t0)) "$(cut -d' ' -f1-3 /proc/loadavg)" \
        >>"$RUN/timings.tsv"
}
generate() { # generate ARM SET N SEED_START: a finished folder (manifest.json) is kept, a killed one made again
    local out=$RUN/arms/$1/generated/$2
    [ ! -f "$out/manifest.json" ] || return 0
    rm -rf "$out"
    timed "$1-generate-$2" $DG generate "$RUN/arms/$1" --n "$3" --seed-start "$4" --out "$out" --threads "$THREADS"
}
has_key() { [ -f "$1" ] && grep -q "\"$2\"" "$1"; } # has_key results.json key: a stage already stored its result
bench_common=(--test-real "$ACDC/test" --fold-groups "$GROUPS_RE" --folds "$FOLDS" --models "$MODELS"
    --threads "$THREADS" --no-progress)

if want train; then
    log "train: cpu-small with ADA to $KIMG kimg"
    if ls "$RUN/training/"snapshot-* >/dev/null 2>&1; then resume=--resume; else resume=; fi
    timed train $DG train "$ACDC/train" --out "$RUN" --preset cpu-small --aug ada --kimg "$KIMG" --snap 8 --fid 500 \
        --log-kimg 1 --threads "$THREADS" --keep 2 --no-progress $resume
fi
if want annotator && [ ! -f "$RUN/annotator.safetensors" ]; then
    log "annotator: U-Net on ACDC train/ masks ($ANNOTATOR_LIMIT)"
    timed annotator $DG bench annotator "$RUN" --real "$ACDC/train" --test-real "$ACDC/test" \
        --real-limit "$ANNOTATOR_LIMIT" --epochs "$ANNOTATOR_EPOCHS" --out "$RUN/annotator.safetensors" --model unet \
        --threads "$THREADS" --no-progress
fi
if want fid && [ ! -f "$RUN/fid.json" ]; then
    log "fid: $N_FID generated images against ACDC train/"
    timed fid $DG fid "$RUN" "$ACDC/train" --n "$N_FID" --threads "$THREADS" --json >"$RUN/fid.json.tmp"
    mv "$RUN/fid.json.tmp" "$RUN/fid.json"
    cat "$RUN/fid.json"
fi
if want pick; then
    n_val=$N_VAL
    [ "$n_val" != all ] || n_val=$(find "$ACDC/val/images" -name '*.png' | wc -l)
    log "pick: $N_REAL ACDC train slices, $n_val val slices, spread over patients"
    $PYTHON benchmarks/reference_acdc.py pick "$ACDC/train" --n "$N_REAL" --seed 0 --groups "$GROUPS_RE" \
        --out "$RUN/real/train"
    $PYTHON benchmarks/reference_acdc.py pick "$ACDC/val" --n "$n_val" --seed 1 --groups "$GROUPS_RE" \
        --out "$RUN/real/val"
fi
if want project; then
    for part in train val; do # projections.json is written last: it marks a finished folder
        [ -f "$RUN/projected/$part/projections.json" ] && continue
        log "project: the picked $part slices, $PROJECT_STEPS steps"
        timed "project-$part" $DG project "$RUN" "$RUN/real/$part" --out "$RUN/projected/$part" \
            --steps "$PROJECT_STEPS" --threads "$THREADS"
    done
fi
if want arms; then
    for arm in $ARMS; do
        A=$RUN/arms/$arm
        mkdir -p "$A"
        for f in generator.safetensors generator.json; do ln -sfn "../../$f" "$A/$f"; done
        log "arm $arm: annotate"
        if [ "$arm" = seeds ] || [ "$arm" = both ]; then
            timed "$arm-annotate-seeds" $DG annotate "$A" --n 30 --diverse --labels "$ACDC/labels.json" \
                --auto "$RUN/annotator.safetensors" --no-serve
        fi
        if [ "$arm" = real ] || [ "$arm" = both ]; then
            timed "$arm-annotate-real" $DG annotate "$A" --import-real "$RUN/real/train" \
                --projections "$RUN/projected/train" --no-serve
        fi
        if [ ! -f "$A/interpreter.safetensors" ]; then
            log "arm $arm: interpret"
            # shellcheck disable=SC2086 # INTERPRET_ARGS is a list of options
            timed "$arm-interpret" $DG interpret "$A" --threads "$THREADS" $INTERPRET_ARGS 2>"$A/interpret.err" ||
                { tr '\r' '\n' <"$A/interpret.err" | tail -5; exit 1; }
        fi
        log "arm $arm: generate $N_TRAIN training pairs and $N_TEST test-G pairs"
        generate "$arm" train "$N_TRAIN" 0
        generate "$arm" test "$N_TEST" 1000000
        if ! has_key "$A/bench/results.json" grading; then
            log "arm $arm: grade $N_GRADE pairs against the annotator"
            timed "$arm-grade" $DG bench grade "$A" "$A/generated/train" --reference "$RUN/annotator.safetensors" \
                --n "$N_GRADE"
        fi
        if ! has_key "$A/bench/results.json" agreement; then
            log "arm $arm: interpreter agreement on the projected val slices"
            timed "$arm-agreement" $DG bench agreement "$A" "$RUN/projected/val" --real "$RUN/real/val" \
                --threads "$THREADS"
        fi
        log "arm $arm: bench $MODELS on synthetic and hybrid sets, $FOLDS folds"
        timed "$arm-bench" $DG bench run "$A" --synthetic "$A/generated/train" --test-generated "$A/generated/test" \
            --real "$RUN/real/train" --sets synthetic,hybrid --epochs "$SYNTH_EPOCHS" "${bench_common[@]}"
    done
fi
if want real; then
    test_g=()
    for arm in $ARMS; do
        g=$RUN/arms/$arm/generated/test
        [ ! -f "$g/manifest.json" ] || test_g+=(--test-generated "$arm=$g")
    done
    log "real: $MODELS on $REAL_LIMIT real ACDC train slices, $FOLDS folds, test-G of $((${#test_g[@]} / 2)) arm(s)"
    timed real-bench $DG bench run "$RUN" --sets real --real "$ACDC/train" --real-limit "$REAL_LIMIT" \
        --epochs "$REAL_EPOCHS" "${test_g[@]}" "${bench_common[@]}"
fi
if want report; then
    log "report: $REPORT_TO/RESULTS.md"
    $PYTHON benchmarks/reference_acdc.py report "$RUN" --arms "${ARMS// /,}" --to "$REPORT_TO"
fi
log "done: $RUN"
