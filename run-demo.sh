#!/usr/bin/env bash
# The whole pipeline on a built-in synthetic MIND-format sample, from a fresh machine:
#
#   ./run-demo.sh [--scale tiny|small|mind-small] [--encoder minilm|use|e5-small|hashing]
#
# sets up the environment (./setup.sh), generates the sample into data/sample-SCALE, then runs
# embed_news and build_features (as of 2019-11-16, the day after the sample) through
# ./spark-submit.sh, trains the DCN with a 2-rank horovodrun, evaluates it against the
# baselines, serves it through the promotion gate (promote), runs the daily job for 2019-11-16 (user state, candidate pool, every user's top k
# into the recommendations table), and prints the run summary, the metrics table and a few
# users' top k from the table.
# Outputs go under work/ (README.md, "Where outputs go").
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

scale=small; encoder=""   # empty: the configuration's embed.encoder
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
          --set "paths.ground_truth=$sample/ground_truth" --set "paths.work=work/demo-$scale")
[[ -n "$encoder" ]] && settings+=(--set "embed.encoder=$encoder")

step() { echo; echo "==> $*"; }
if [[ ! -f "$sample/MINDsmall_dev/behaviors.tsv" ]]; then
  step "generating the synthetic MIND sample ($scale) into $sample"
  "$venv/bin/python" -m synthetic --scale "$scale" --out "$sample" --seed 0
fi
logs="work/demo-$scale/logs"; mkdir -p "$logs"
run_job() {  # JOB [job options]: run it through the launcher, its output to the log folder
  local job="$1"; shift
  step "$job (output: $logs/$job.out, Spark's own log: $logs/$job.log)"
  ./spark-submit.sh "$job" "${settings[@]}" "$@" > "$logs/$job.out" 2> "$logs/$job.log" \
    || { tail -30 "$logs/$job.out" "$logs/$job.log"; echo "run-demo.sh: $job failed" >&2; exit 1; }
}
run_date="2019-11-16"   # the day after the sample's last impressions
run_job embed_news
run_job build_features --as-of "$run_date"
step "train (horovodrun -np 2, log: $logs/train.log)"
"$venv/bin/horovodrun" -np 2 -H localhost:2 --gloo \
  "$venv/bin/python" -m dcn.train "${settings[@]}" > "$logs/train.log" 2>&1 \
  || { tail -30 "$logs/train.log"; echo "run-demo.sh: train failed" >&2; exit 1; }
grep -E "epoch .*(loss|auc)|early stop" "$logs/train.log" | sed 's/^\[[0-9]*\]<stdout>://' | tail -8 || true
run_job evaluate
run_job promote   # the gate: the registry serves the model only if it beats the baselines
grep -m1 "^promote" "$logs/promote.out" || true
if grep -q '"promoted": false' "$logs/promote.out"; then
  version="$(sed -n 's/^  "version": "\([^"]*\)",\{0,1\}$/\1/p' "$logs/promote.out" | head -1)"
  echo "run-demo.sh: the gate refused $version; the demo serves it anyway (promote --force)"
  run_job promote --version "$version" --force
fi
run_job daily --date "$run_date"
step "run summary"
"$venv/bin/python" -m jobs.show_runs "${settings[@]}"
step "recommendations read back from the table"
./spark-submit.sh show_recommendations "${settings[@]}" --run-date "$run_date" 2> "$logs/show_recommendations.log"
