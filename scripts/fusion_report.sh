#!/usr/bin/env bash
# One command from training to report: compare fusions on AV-digits over seeds, evaluate their
# robustness to missing / corrupted modalities, and build the comparison report.
#
#   scripts/fusion_report.sh [OUT_DIR] [extra polyfuse-train overrides...]
#   FUSIONS=concat,late,cross_attention,lmf SEEDS=0,1,2 scripts/fusion_report.sh
#   scripts/fusion_report.sh /tmp/quick trainer.max_epochs=2        # a quick smoke run
#   PARALLEL=1 OMP_NUM_THREADS=1 scripts/fusion_report.sh          # one multirun process per fusion
#
# OUT_DIR (default outputs/avdigits_fusions/<time>) receives Hydra multiruns -- fusions/ (each
# fusion x seed; fusions/<fusion>/ with PARALLEL=1) and modality_dropout/ (concat trained with
# ModDrop x seed) -- robustness results inside every run (polyfuse-eval) and the report in
# OUT_DIR/report (REPORT_DIR overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-outputs/avdigits_fusions/$(date +%Y-%m-%d_%H-%M-%S)}
shift || true
FUSIONS=${FUSIONS:-concat,late,cross_attention}
SEEDS=${SEEDS:-0,1}
REPORT_DIR=${REPORT_DIR:-$OUT/report}
train=("$PY" -m polyfuse.cli.train -m task_name=avdigits_fusions "seed=$SEEDS")

if [[ "${PARALLEL:-0}" == 1 ]]; then
    pids=()
    for fusion in ${FUSIONS//,/ }; do
        "${train[@]}" "model/fusion=$fusion" "hydra.sweep.dir=$OUT/fusions/$fusion" "$@" > "$OUT.$fusion.log" 2>&1 &
        pids+=($!)
    done
    "${train[@]}" model/fusion=concat +model/modality_dropout=default "hydra.sweep.dir=$OUT/modality_dropout" "$@" \
        > "$OUT.modality_dropout.log" 2>&1 &
    pids+=($!)
    for pid in "${pids[@]}"; do wait "$pid"; done
else
    "${train[@]}" "model/fusion=$FUSIONS" "hydra.sweep.dir=$OUT/fusions" "$@"
    "${train[@]}" model/fusion=concat +model/modality_dropout=default "hydra.sweep.dir=$OUT/modality_dropout" "$@"
fi
"$PY" -m polyfuse.cli.eval "run_dir=$OUT" skip_existing=true
"$PY" -m polyfuse.cli.report "$OUT" --out "$REPORT_DIR" --reference late --title "AV-digits: fusion comparison"
echo "report: $REPORT_DIR/index.html"
