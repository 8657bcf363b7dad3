#!/usr/bin/env bash
# One command from training to report: compare fusions on AV-digits over seeds, evaluate their
# robustness to missing / corrupted modalities, and build the comparison report.
#
#   scripts/fusion_report.sh [OUT_DIR] [extra polyfuse-train overrides...]
#   FUSIONS=concat,late,cross_attention,lmf SEEDS=0,1,2 scripts/fusion_report.sh
#   scripts/fusion_report.sh /tmp/quick trainer.max_epochs=2        # a quick smoke run
#   PARALLEL=1 OMP_NUM_THREADS=1 scripts/fusion_report.sh          # one process per run, all at once
#
# OUT_DIR (default outputs/avdigits_fusions/<time>) receives Hydra multiruns -- fusions/ (each
# fusion x seed; fusions/<fusion>/seed<seed>/ with PARALLEL=1) and modality_dropout/ (concat
# trained with ModDrop x seed) -- robustness results inside every run (polyfuse-eval) and the
# report in OUT_DIR/report (REPORT_DIR overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-outputs/avdigits_fusions/$(date +%Y-%m-%d_%H-%M-%S)}
shift || true
FUSIONS=${FUSIONS:-concat,late,cross_attention}
SEEDS=${SEEDS:-0,1}
REPORT_DIR=${REPORT_DIR:-$OUT/report}
train=("$PY" -m polyfuse.cli.train -m task_name=avdigits_fusions)

if [[ "${PARALLEL:-0}" == 1 ]]; then  # one process per run: fusions/<fusion>/seed<seed>/0
    pids=()
    for seed in ${SEEDS//,/ }; do
        for fusion in ${FUSIONS//,/ }; do
            "${train[@]}" "seed=$seed" "model/fusion=$fusion" "hydra.sweep.dir=$OUT/fusions/$fusion/seed$seed" "$@" \
                > "$OUT.$fusion.$seed.log" 2>&1 &
            pids+=($!)
        done
        "${train[@]}" "seed=$seed" model/fusion=concat +model/modality_dropout=default \
            "hydra.sweep.dir=$OUT/modality_dropout/seed$seed" "$@" > "$OUT.modality_dropout.$seed.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
else
    "${train[@]}" "seed=$SEEDS" "model/fusion=$FUSIONS" "hydra.sweep.dir=$OUT/fusions" "$@"
    "${train[@]}" "seed=$SEEDS" model/fusion=concat +model/modality_dropout=default \
        "hydra.sweep.dir=$OUT/modality_dropout" "$@"
fi
"$PY" -m polyfuse.cli.eval "run_dir=$OUT" skip_existing=true
"$PY" -m polyfuse.cli.report "$OUT" --out "$REPORT_DIR" --reference late --title "AV-digits: fusion comparison"
echo "report: $REPORT_DIR/index.html"
