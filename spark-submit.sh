#!/usr/bin/env bash
# Run one of the project's Spark jobs through the real spark-submit.
#
#   ./spark-submit.sh JOB [--config FILE] [--set key=value ...] [job options] [-- spark-submit options]
#
# JOB is a file jobs/JOB.py (embed_news, build_features, score, train, ...). The project's
# wheel (pyproject.toml's packages) is shipped to the executors with --py-files, so the same
# command runs against a cluster: pass `-- --master spark://host:7077` (or yarn, k8s://...)
# or set spark.master in the config. Default master: local[*] (all cores of this machine).
# Options after `--` go to spark-submit unchanged and win over the config.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${NEWSREC_VENV:-$here/.venv}"
python="$venv/bin/python"

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
job="$1"; shift
if [[ ! -f "$here/jobs/$job.py" ]]; then
  echo "error: no job '$job' (no $here/jobs/$job.py); the jobs are:" \
    $(cd "$here/jobs" && grep -l "^def main" *.py | sed 's/\.py$//') >&2
  exit 2
fi
[[ -x "$python" ]] || { echo "spark-submit.sh: no environment at $venv: run ./setup.sh first" >&2; exit 2; }

job_args=(); submit_args=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--" ]]; then shift; submit_args=("$@"); break; fi
  job_args+=("$1"); shift
done

# Options from the config (master, driver memory); later options on the command line win.
mapfile -t config_args < <(cd "$here" && "$python" -m common.launch ${job_args[@]+"${job_args[@]}"})
[[ ${#config_args[@]} -gt 0 ]] || exit 2

# Ship the project to the executors: the wheel pip builds from this checkout, what
# `pip install .` installs (common/bundle.py). spark-submit puts it on the driver's path too.
bundle="$(cd "$here" && "$python" -m common.bundle "$here")" || exit 2
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$python}"
# The master that wins: the last --master of the config's options and the ones after `--`.
master=""; all_args=("${config_args[@]}" ${submit_args[@]+"${submit_args[@]}"})
for ((i = 0; i < ${#all_args[@]}; i++)); do
  if [[ "${all_args[$i]}" == "--master" ]]; then master="${all_args[$((i + 1))]:-}"; fi
done
# Only a local master binds to the loopback: on a cluster driver SPARK_LOCAL_IP=127.0.0.1
# would make the driver advertise localhost to the executors.
if [[ "$master" == local* ]]; then export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"; fi
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-0}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

cd "$here"
# Later options win: the defaults (this venv's Python for the driver and, unless the config
# ships an environment, for the executors), then the config's, then those after `--`.
# spark.pyspark.driver.python is set because Spark prefers spark.pyspark.python over
# PYSPARK_DRIVER_PYTHON for the driver, and a shipped ./environment exists only on executors.
# spark-submit merges the Python driver's stderr into its stdout: the job writes its `error:`
# line into this file instead (common/cli.py), and it is shown on stderr when the job ends.
export NEWSREC_ERROR_FILE="$scratch/errors"
# The driver's JVM logs warnings and errors only (conf/log4j2.properties); Spark's progress bar
# is drawn only for a person watching a terminal, never into a scheduler's log.
progress=false; [[ -t 2 ]] && progress=true
# The job's progress lines (one per stage, common/cli.py) go into a file that is followed onto
# stderr while the job runs; the follower stops, after a last read, when `sentinel` ends.
export NEWSREC_LOG_FILE="$scratch/progress"
: > "$NEWSREC_LOG_FILE"
sleep 2147483647 & sentinel=$!
trap 'kill "$sentinel" 2>/dev/null || true; rm -rf "$scratch"' EXIT
tail -n +1 -s 0.5 -f --pid="$sentinel" "$NEWSREC_LOG_FILE" >&2 & follower=$!
status=0
"$venv/bin/spark-submit" --conf spark.pyspark.python="$PYSPARK_PYTHON" \
  --conf spark.pyspark.driver.python="$PYSPARK_DRIVER_PYTHON" \
  --driver-java-options "-Dlog4j.configurationFile=$here/conf/log4j2.properties" \
  --conf spark.ui.showConsoleProgress="$progress" \
  "${config_args[@]}" --py-files "$bundle" \
  ${submit_args[@]+"${submit_args[@]}"} "jobs/$job.py" ${job_args[@]+"${job_args[@]}"} || status=$?
kill "$sentinel" 2>/dev/null || true
wait "$follower" 2>/dev/null || true
if [[ -s "$NEWSREC_ERROR_FILE" ]]; then cat "$NEWSREC_ERROR_FILE" >&2; fi
exit "$status"
