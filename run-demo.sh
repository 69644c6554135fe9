#!/usr/bin/env bash
# The whole pipeline on a built-in synthetic MIND-format sample, from a fresh machine:
#
#   ./run-demo.sh [--scale tiny|small|mind-small] [--encoder use|hashing]
#
# sets up the environment (./setup.sh), generates the sample into data/sample, then runs
# embed_news and build_features through ./spark-submit.sh and prints the run summary.
# Outputs go under work/ (README.md, "Where outputs go").
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

scale=small; encoder=use
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scale) scale="$2"; shift 2 ;;
    --encoder) encoder="$2"; shift 2 ;;
    *) echo "run-demo.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

./setup.sh
venv="${NEWSREC_VENV:-$here/.venv}"
export TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2

sample="data/sample-$scale"
settings=(--set "paths.train=$sample/MINDsmall_train" --set "paths.dev=$sample/MINDsmall_dev"
          --set "paths.ground_truth=$sample/ground_truth" --set "paths.work=work/demo-$scale"
          --set "embed.encoder=$encoder")

step() { echo; echo "==> $*"; }
if [[ ! -f "$sample/MINDsmall_dev/behaviors.tsv" ]]; then
  step "generating the synthetic MIND sample ($scale) into $sample"
  "$venv/bin/python" -m jobs.generate_mind --scale "$scale" --out "$sample" --seed 0
fi
logs="work/demo-$scale/logs"; mkdir -p "$logs"
run_job() {  # JOB: run it through the launcher, its JSON summary to the log folder
  step "$1 (log: $logs/$1.json, Spark's own log: $logs/$1.log)"
  ./spark-submit.sh "$1" "${settings[@]}" > "$logs/$1.json" 2> "$logs/$1.log" \
    || { tail -30 "$logs/$1.log"; echo "run-demo.sh: $1 failed" >&2; exit 1; }
}
run_job embed_news
run_job build_features
step "run summary"
"$venv/bin/python" -m jobs.show_runs "${settings[@]}"
